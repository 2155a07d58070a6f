"""SIGTERM and SIGINT to `mlflow run` at random moments, N times: every run the command started must end
KILLED (never RUNNING) and no process may be left. Run it with the test suite (or any load) beside it.

    python bench/signals.py --tries 20 [--entry train|main|tune]

Each try starts `mlflow run . -e <entry> --env-manager local` on tiny synthetic ML-100K-format data with
a schedule that would run for minutes, sends SIGTERM or SIGINT (alternating) to its process group at a
random moment from 0 to 12 s after `mlflow run` started the step (its imports, its first epochs), waits for it, then checks the tracking store: the
step's run and any nested run it left must read KILLED within 60 s, and no process of the try may live.
Prints one line per try and `k of N held`.
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def survivors(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if f"RECSYS_SIGNAL_TRY={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes() \
                    and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text():
                found.append(int(pid))
        except OSError:
            continue
    return found


def one(i: int, entry: str, folder: Path, data_dir: Path, rng: random.Random) -> tuple[bool, str]:
    import mlflow

    work = folder / f"try{i}"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", RECSYS_SIGNAL_TRY=str(work))
    long = work / "long.yaml"
    long.write_text("training: {epochs: 100000, min_epochs: 100000}\n"
                    "search: {rating: {lr: {type: float, low: 0.001, high: 0.01, log: true}}}\n")
    params = {"train": ["model=mf", f"config={long}", f"data={data_dir}"],
              "main": ["models=mf,fm", f"config={long}", f"dataset={data_dir}", "parallel=2"],
              "tune": ["model=mf", f"config={long}", f"data={data_dir}", "trials=3"]}[entry]
    if entry != "main":  # a prepared data URI first: the try's clock starts at the step itself
        subprocess.run([sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "prepare", "--env-manager", "local",
                        "-P", f"dataset={data_dir}"], cwd=work, env=env, capture_output=True, check=True)
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        prep = mlflow.search_runs(search_all_experiments=True, output_format="list")[0].info.run_id
        params[-1] = f"data=runs:/{prep}/data"
    sig = (signal.SIGTERM, signal.SIGINT)[i % 2]
    wait = rng.uniform(0.0, 12.0)  # from the step's first second (importing) to mid-epoch and later
    with open(work / "out.txt", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local",
                                 *[x for p in params for x in ("-P", p)]], cwd=work, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()  # the step's first second: once `mlflow run` has started its command
        while "=== Running command" not in (work / "out.txt").read_text() and time.monotonic() - t0 < 120:
            time.sleep(0.05)
        time.sleep(wait)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=300)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    deadline, states = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        try:
            runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
        except Exception:  # a locked store: read again
            time.sleep(0.5)
            continue
        states = {r.info.run_name: r.info.status for r in runs if r.data.tags.get("step") != "prepare"
                  or entry == "main"}
        if states and set(states.values()) <= {"KILLED", "FINISHED"}:
            break  # (FAILED may be `mlflow run`'s word a moment before the step's guard puts KILLED back)
        time.sleep(0.5)
    left = survivors(str(work))
    ok = "RUNNING" not in states.values() and "FAILED" not in states.values() and not left
    if not ok:
        print((work / "out.txt").read_text()[-1500:], flush=True)
    return ok, (f"{signal.Signals(sig).name} after {wait:.1f}s: {states or 'no run yet'}"
                + (f"; {len(left)} processes left" if left else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--entry", default="train", choices=["train", "main", "tune"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from recsys.data import synthetic

    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="recsys-signals-") as tmp:
        folder = Path(tmp)
        data_dir = synthetic.write_ml100k(folder / "ml-100k", 300, 400, 20_000, seed=1)
        held = 0
        for i in range(a.tries):
            ok, line = one(i, a.entry, folder, data_dir, rng)
            held += ok
            print(f"try {i + 1}: {'held' if ok else 'FAILED'}: {line}", flush=True)
        print(f"{a.entry}: {held} of {a.tries} held (every run KILLED, none RUNNING or FAILED, no process left)")


if __name__ == "__main__":
    main()
