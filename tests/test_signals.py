"""Interrupts end runs truthfully (slow: real processes, real signals)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    e.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", RECSYS_DATA_DIR=str(tmp_path / "cache"),
             RECSYS_TEST_MARKER=str(tmp_path),  # lets the test find every process it started
             PYTHONFAULTHANDLER="1")  # a process that hangs prints where, when the test aborts it
    mlflow.set_tracking_uri(e["MLFLOW_TRACKING_URI"])
    mlflow.search_experiments()  # create the store's tables once, before processes race to
    return e


def _step(env, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_line(proc, needle, timeout=120):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"never saw {needle!r}: {''.join(lines)[-2000:]} {proc.stderr.read()[-2000:]}")


def _runs(step):
    return mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.step = '{step}'",
                              order_by=["attributes.start_time ASC"], output_format="list")


def _survivors(marker):
    """Processes (other than this one) whose environment carries the test's marker."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if f"RECSYS_TEST_MARKER={marker}".encode() in environ and "State:\tZ" not in status:
            found.append(int(pid))
    return found


TRAIN = ["--model", "mf", "--epochs", "12", "--min_epochs", "12", "--batch_size", "64"]


def test_sigterm_ends_train_killed_with_last_checkpoint_and_resume_matches_the_uninterrupted_run(env):
    from steps import prepare as prepare_step

    data = f"runs:/{prepare_step.main(['--dataset', 'synthetic', '--n-users', '300', '--n-items', '400', '--n-ratings', '30000'])}/data"

    train = _step(env, "steps.train", "--data", data, *TRAIN)
    _wait_for_line(train, "epoch 3/12")
    train.send_signal(signal.SIGTERM)
    out, err = train.communicate(timeout=120)
    assert train.returncode == 128 + signal.SIGTERM
    assert [line for line in err.splitlines() if line.startswith("error:")][0].startswith("error: interrupted by SIGTERM")
    [killed] = _runs("train")
    assert killed.info.status == "KILLED" and "interrupted by SIGTERM" in killed.data.tags["error"]
    # the line and the tag offer the resume (its checkpoint existed when the signal came)
    assert killed.data.tags["error"].endswith(f"(continue with -P resume_from={killed.info.run_id})")
    assert f"resume_from={killed.info.run_id}" in err
    assert "recsys.complete" not in killed.data.tags
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(killed.info.run_id, "checkpoint")}
    assert arts == {"checkpoint/last.ckpt"}
    assert not [a for a in mlflow.MlflowClient().list_artifacts(killed.info.run_id) if a.path == "model"]
    epochs_done = len(mlflow.MlflowClient().get_metric_history(killed.info.run_id, "val/rmse"))
    assert 2 <= epochs_done < 12

    resumed = _step(env, "steps.train", "--resume_from", killed.info.run_id)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    lines = [line.removeprefix("mf ") for line in out.splitlines() if line.startswith("mf epoch ")]
    # it went on from the last checkpoint, not from scratch: the first epoch it runs is the one after the
    # last checkpoint, which is the last validated epoch or (when the signal came before its checkpoint
    # was written) the one before it
    first = int(lines[0].split()[1].split("/")[0])
    assert lines[-1].startswith("epoch 12/12") and epochs_done <= first <= epochs_done + 1, lines[:2]
    from steps import train as train_step

    train_step.main(["--data", data, *TRAIN])  # the uninterrupted reference, in-process
    _, r, f = _runs("train")
    assert r.info.status == "FINISHED" and r.data.tags["recsys.complete"] == "true"
    assert r.data.params["resume_from"] == killed.info.run_id
    assert abs(r.data.metrics["best_val_rmse"] - f.data.metrics["best_val_rmse"]) < 0.01


def _main_pid(marker: str) -> int:
    """main's step process (`python -m steps.main`, under the `mlflow run` CLI)."""
    for pid in _survivors(marker):
        if b"steps.main" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("no main step running")


@pytest.mark.parametrize("how", ["sigterm_to_the_group", "sigkill_to_main"])
def test_sigterm_to_main_stops_its_child_and_nothing_stays_running(env, tmp_path, ml100k_dir, how):
    long = tmp_path / "long.yaml"  # a training that would run for minutes
    long.write_text("training: {epochs: 100000, min_epochs: 100000}\n")  # the rest from defaults.yaml
    main = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "-P", f"dataset={ml100k_dir}",
         "-P", "models=mf", "-P", f"config={long}", "-P", "force=1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and main.poll() is None:
        train = [r for r in _runs("train") if r.info.status == "RUNNING"]
        if train and mlflow.MlflowClient().get_metric_history(train[0].info.run_id, "val/rmse"):
            break
        time.sleep(0.5)
    else:
        main.kill()
        raise AssertionError(main.stdout.read()[-3000:])
    if how == "sigterm_to_the_group":
        os.killpg(main.pid, signal.SIGTERM)  # what a scheduler or `kill -- -PGID` does
    else:  # main killed outright (the OOM killer): its train step, forked from the preloaded interpreter, still stops
        os.kill(_main_pid(str(tmp_path)), signal.SIGKILL)
    main.wait(timeout=120)
    assert main.returncode != 0
    # main's step stops its child's whole process group, waits for it, then exits: within the grace period
    deadline = time.monotonic() + 60
    while _survivors(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:200] for p in _survivors(str(tmp_path))]
    assert left == []
    [m] = mlflow.search_runs(search_all_experiments=True, output_format="list",
                             filter_string="tags.`mlflow.project.entryPoint` = 'main'")
    [t] = _runs("train")
    assert m.info.status in ("KILLED", "FAILED")
    assert how == "sigkill_to_main" or "interrupted" in m.data.tags["error"]
    assert _status_becomes(t.info.run_id, "KILLED") and "recsys.complete" not in t.data.tags
    assert not [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                if r.info.status == "RUNNING"]


def test_eight_evaluations_at_once_on_sqlite_all_finish(env, ml100k_dir):
    from steps import prepare as prepare_step
    from steps import train as train_step

    data = f"runs:/{prepare_step.main(['--dataset', str(ml100k_dir)])}/data"
    model = f"runs:/{train_step.main(['--data', data, '--model', 'mf', '--epochs', '1', '--min_epochs', '0'])}/model"
    procs = [_step(env, "steps.evaluate", "--model-uri", model, "--k", "5") for _ in range(8)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    runs = _runs("evaluate")
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.metrics["test/rmse"] for r in runs}) == 1


def _mlflow_run(env, cwd, entry, *params):
    """In its own session; its output to a file (a pipe nobody reads would fill and block the step)."""
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local"]
    with open(Path(cwd) / f"{entry}.out", "w") as out:
        return subprocess.Popen(cmd + [x for p in params for x in ("-P", p)], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _training(env, tmp_path, ml100k_dir):
    """`mlflow run -e train` of a training that would run for minutes, once it has validated an epoch."""
    from steps import prepare as prepare_step

    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    long = tmp_path / "long.yaml"
    long.write_text("training: {epochs: 100000, min_epochs: 100000}\n")
    proc = _mlflow_run(env, tmp_path, "train", f"data=runs:/{data}/data", f"config={long}")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        running = [r for r in _runs("train") if r.info.status == "RUNNING"]
        if running and mlflow.MlflowClient().get_metric_history(running[0].info.run_id, "val/rmse"):
            return proc, running[0].info.run_id
        time.sleep(0.5)
    proc.kill()
    raise AssertionError((tmp_path / "train.out").read_text()[-3000:])


def _status_becomes(run_id, status, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if mlflow.get_run(run_id).info.status == status:
                return True
        except mlflow.exceptions.MlflowException as e:  # SQLite: a writer (the step, its guard) holds the lock
            if "database is locked" not in str(e):
                raise
        time.sleep(0.5)
    return False


def _abort_and_show(pids, out: Path) -> str:
    """Where each left-over process was stuck: SIGABRT makes Python's faulthandler print every thread."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGABRT)
    time.sleep(2)
    return out.read_text()[-6000:] if out.exists() else ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_under_mlflow_run_ends_the_step_killed(env, tmp_path, ml100k_dir, sig):
    proc, run_id = _training(env, tmp_path, ml100k_dir)
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C, or a supervisor stopping the command, does
    proc.wait(timeout=120)
    assert proc.returncode != 0
    # `mlflow run` writes FAILED over it once its command exits; the step's status is put back
    assert _status_becomes(run_id, "KILLED"), mlflow.get_run(run_id).info.status
    run = mlflow.get_run(run_id)
    assert f"interrupted by {signal.Signals(sig).name}" in run.data.tags["error"] and "recsys.complete" not in run.data.tags


PROBE = """
import os, signal, sys, time
import mlflow
from recsys import interrupts
from recsys.tracking import runs

with runs.step_run("train"):
    if sys.argv[1] == "in_a_store_write":
        from mlflow.tracking._tracking_service.utils import _get_store
        from sqlalchemy import event
        sent = []

        def once(*args):  # from inside the metric's SQL session: a Ctrl-C that lands mid-write
            if not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)

        event.listen(_get_store().engine, "after_cursor_execute", once)
        mlflow.log_metric("during", 1.0)
    else:  # `mlflow run`'s SIGTERM, arriving while the step's SIGINT handler is still winding down
        message = interrupts.message

        def and_a_second(signum):
            os.kill(os.getpid(), signal.SIGTERM)
            return message(signum)

        interrupts.message = and_a_second
        os.kill(os.getpid(), signal.SIGINT)
    time.sleep(60)  # never reached: the interrupt ends the step
"""


@pytest.mark.parametrize("where", ["in_a_store_write", "during_the_first_ones_wind_down"])
def test_a_signal_never_cuts_a_store_write_and_a_second_one_never_cuts_the_first(env, where):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", PROBE, where], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-3000:]
    assert time.monotonic() - t0 < 40 and "database is locked" not in proc.stderr  # no store wait, no 60 s timer
    assert proc.stderr.strip().splitlines()[-1].startswith("error: interrupted by SIGINT"), proc.stderr[-3000:]
    [run] = _runs("train")
    assert _status_becomes(run.info.run_id, "KILLED")
    assert "interrupted by SIGINT" in mlflow.get_run(run.info.run_id).data.tags["error"]
    if where == "in_a_store_write":  # the write the signal landed in was finished, then the step stopped
        assert mlflow.get_run(run.info.run_id).data.metrics["during"] == 1.0


FORKED = """
import os, signal, time
from multiprocessing import forkserver
from mlflow.utils import requirements_utils
from recsys.processes import alive
from recsys.tracking import prefork

prefork.warm()
process = prefork._context.Process(target=time.sleep, args=(120,))
process.start()  # once the server has imported everything, the last of it recsys/tracking/preloaded.py
step, server = prefork.Forked(process), forkserver._forkserver._forkserver_pid
prefork.shutdown()  # what main does as it ends
deadline = time.monotonic() + 30
while alive(server) and time.monotonic() < deadline:
    time.sleep(0.05)
assert not alive(server), "the server outlived shutdown()"
assert step.poll() is None and step.wait(0.5) is None, "a step still running counted as ended"
os.kill(step.pid, signal.SIGKILL)
assert step.wait(30) is not None and not alive(step.pid)
import recsys.tracking.preloaded  # what the server filled for its steps
assert requirements_utils._MODULES_TO_PACKAGES, "MLflow's package map not filled"
print("ok")
"""


def test_a_forked_step_counts_as_running_until_it_ends_even_when_its_server_is_gone(env):
    proc = subprocess.run([sys.executable, "-c", FORKED], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_sigterm_to_the_mlflow_run_process_stops_the_step_it_started(env, tmp_path, ml100k_dir):
    proc, run_id = _training(env, tmp_path, ml100k_dir)
    os.kill(proc.pid, signal.SIGTERM)  # the launcher alone: it exits at once and passes nothing on
    proc.wait(timeout=60)
    deadline = time.monotonic() + 90  # it stops at once; a wind-down that hangs ends within a minute
    while _survivors(env["RECSYS_TEST_MARKER"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _survivors(env["RECSYS_TEST_MARKER"])
    assert not left, _abort_and_show(left, tmp_path / "train.out")  # the training did not go on orphaned
    assert _status_becomes(run_id, "KILLED"), mlflow.get_run(run_id).info.status
    assert "recsys.complete" not in mlflow.get_run(run_id).data.tags


def test_ctrl_c_while_a_step_is_still_importing_ends_its_run_killed_in_one_line(env):
    proc = _step(env, "steps.prepare", "--dataset", "synthetic")
    # once mlflow's import has begun (pydantic's extension is mapped: steps/__init__ has deferred the
    # signals before it), and long before it ends, whatever the machine's load
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if "pydantic_core" in Path(f"/proc/{proc.pid}/maps").read_text():
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: interrupted by SIGINT; what was logged is kept"], err[-2000:]
    [run] = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "KILLED" and run.data.tags["mlflow.runName"] == "prepare"
    assert "interrupted by SIGINT" in run.data.tags["error"]


HANGING_STORE = """
import os, signal, sys, time
import mlflow
from recsys.tracking import runs
runs._WIND_DOWN_S = 3.0
with runs.step_run("prepare") as run:
    print(run.info.run_id, flush=True)
    mlflow.end_run = lambda *a, **k: time.sleep(3600)  # the store stops answering as the interrupt is recorded
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(3600)
"""


def test_an_interrupted_step_whose_store_hangs_still_exits_and_ends_killed(env):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", HANGING_STORE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 60  # three seconds of wind-down, not the hour the store would take
    run_id = proc.stdout.split()[0]
    assert _status_becomes(run_id, "KILLED"), mlflow.get_run(run_id).info.status  # the guard recorded it
    assert "interrupted by SIGTERM" in mlflow.get_run(run_id).data.tags["error"]


def test_the_guard_outlives_the_signal_that_stops_its_steps_process_tree(env, tmp_path):
    """The KILLED record is the last word by construction: the guard an interrupted step starts ignores
    SIGINT and SIGTERM from its first instruction, and `stop_trees` (main stopping its child's whole tree)
    spares it, so whichever process sees the signal first, the guard is there to write KILLED after the
    step and its launcher are gone."""
    from recsys import processes

    client = mlflow.MlflowClient()
    run_id = client.create_run(client.create_experiment("guarded")).info.run_id
    script = ("import time; from recsys import interrupts\n"
              f"interrupts._start_guard({run_id!r}, 'interrupted by SIGTERM; what was logged is kept', None, "
              f"{env['MLFLOW_TRACKING_URI']!r})\n"
              "print('guarded', flush=True); time.sleep(120)\n")
    step = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert step.stdout.readline().strip() == "guarded"
    guards = [p for p in processes.descendants([step.pid])
              if b"recsys.tracking.guard" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert guards, "the step started no guard"
    processes.stop_trees([step])  # SIGTERM to the step and everything it started, as main does to a child
    os.kill(guards[0], signal.SIGTERM)  # and a stray SIGTERM of its own (a process group signalled twice)
    deadline = time.monotonic() + 60
    while client.get_run(run_id).info.status != "KILLED" and time.monotonic() < deadline:
        time.sleep(0.2)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("interrupted by SIGTERM")


def test_sigterm_to_mlflow_run_during_tune_ends_the_sweep_and_its_running_trial_killed_in_one_line(
        env, tmp_path, ml100k_dir):
    from steps import prepare as prepare_step

    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    long = tmp_path / "long.yaml"
    long.write_text("training: {epochs: 100000, min_epochs: 100000}\n"
                    "search: {rating: {lr: {type: float, low: 0.001, high: 0.01, log: true}}}\n")
    proc = _mlflow_run(env, tmp_path, "tune", f"data=runs:/{data}/data", f"config={long}", "model=mf", "trials=3",
                       "pruner=none")
    deadline, trial = time.monotonic() + 180, None
    while time.monotonic() < deadline and proc.poll() is None and trial is None:
        running = [r for r in _runs("tune-trial") if r.info.status == "RUNNING"]
        if running and mlflow.MlflowClient().get_metric_history(running[0].info.run_id, "val/rmse"):
            trial = running[0].info.run_id
        time.sleep(0.5)
    assert trial, (tmp_path / "tune.out").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    sweep = _runs("tune")[-1].info.run_id
    assert _status_becomes(sweep, "KILLED") and _status_becomes(trial, "KILLED"), (
        mlflow.get_run(sweep).info.status, mlflow.get_run(trial).info.status)
    assert "interrupted by SIGTERM" in mlflow.get_run(trial).data.tags["error"]
    out = (tmp_path / "tune.out").read_text()
    assert "Traceback" not in out, out[-3000:]
