"""Interrupts end runs truthfully (slow: real processes, real signals)."""

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
             RECSYS_TEST_MARKER=str(tmp_path))  # lets the test find every process it started
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
    assert "recsys.complete" not in killed.data.tags
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(killed.info.run_id, "checkpoint")}
    assert arts == {"checkpoint/last.ckpt"}
    assert not [a for a in mlflow.MlflowClient().list_artifacts(killed.info.run_id) if a.path == "model"]
    epochs_done = len(mlflow.MlflowClient().get_metric_history(killed.info.run_id, "val/rmse"))
    assert 2 <= epochs_done < 12

    resumed = _step(env, "steps.train", "--resume_from", killed.info.run_id)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
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
    assert abs(r.data.metrics["test/rmse"] - f.data.metrics["test/rmse"]) < 0.01


def test_sigterm_to_main_stops_its_child_and_nothing_stays_running(env, tmp_path, ml100k_dir):
    long = tmp_path / "long.yaml"  # a training that would run for minutes
    long.write_text("training: {epochs: 500, min_epochs: 500}\n")  # the rest from defaults.yaml
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
    os.killpg(main.pid, signal.SIGTERM)  # what a scheduler or `kill -- -PGID` does
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
    assert m.info.status in ("KILLED", "FAILED") and "interrupted" in m.data.tags["error"]
    assert t.info.status == "KILLED" and "recsys.complete" not in t.data.tags
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
