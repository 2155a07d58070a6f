"""The guard an interrupted step leaves behind (recsys/tracking/guard.py), on a stand-in store."""

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

from recsys.tracking import guard


class Store:
    """What the guard asks of MlflowClient: get_run, set_tag, set_terminated."""

    def __init__(self, status="RUNNING", tags=None):
        self.status, self.tags, self.writes = status, dict(tags or {}), []

    def get_run(self, run_id):
        return SimpleNamespace(info=SimpleNamespace(status=self.status, experiment_id="0", run_id=run_id),
                               data=SimpleNamespace(tags=dict(self.tags)))

    def set_tag(self, run_id, key, value):
        self.tags[key] = value

    def set_terminated(self, run_id, status):
        self.status = status
        self.writes.append(status)

    def search_runs(self, experiment_ids, filter_string):
        return []


def test_it_marks_the_run_killed_once_the_step_is_gone_and_keeps_the_steps_own_error():
    step = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    store = Store(tags={"error": "interrupted by SIGINT; what was logged is kept"})
    t0 = time.monotonic()
    assert guard.guard(store, "r", "interrupted by SIGTERM", step.pid, None, time.monotonic() + 30)
    step.wait()
    assert time.monotonic() - t0 >= 0.25 and store.status == "KILLED"  # not before the step had exited
    assert store.tags["error"] == "interrupted by SIGINT; what was logged is kept"


def test_a_launcher_that_writes_failed_after_the_step_is_answered_at_once():
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4)"])
    store = Store()
    launcher_alive = []  # at each write: was the launcher still there

    def terminated(run_id, status):
        Store.set_terminated(store, run_id, status)
        launcher_alive.append(launcher.poll() is None)

    store.set_terminated = terminated

    def cli():  # `mlflow run` marks the run FAILED once its command exited, then itself exits later
        time.sleep(0.5)
        store.set_terminated("r", "FAILED")

    threading.Thread(target=cli).start()
    assert guard.guard(store, "r", "interrupted by SIGINT", 2**22 + 7, launcher.pid, time.monotonic() + 30)
    launcher.wait()
    assert store.writes[:3] == ["KILLED", "FAILED", "KILLED"] and store.status == "KILLED"
    assert "error" in store.tags
    # answered while the launcher was still there (3.5 s of it left), not once it had gone: no
    # wall-clock window to flake on a busy machine
    assert launcher_alive[:3] == [True, True, True]


def test_a_store_that_refuses_is_retried_until_the_deadline():
    class Locked(Store):
        def get_run(self, run_id):
            raise RuntimeError("database is locked")

    t0 = time.monotonic()
    assert not guard.guard(Locked(), "r", "x", 2**22 + 7, None, time.monotonic() + 1.0)
    assert 0.9 < time.monotonic() - t0 < 5


def test_its_nested_runs_still_running_end_killed_with_it():
    class Nested(Store):
        def __init__(self):
            super().__init__()
            self.children = {"t1": Store(), "t2": Store(status="FINISHED")}

        def search_runs(self, experiment_ids, filter_string):
            assert "tags.mlflow.parentRunId = 'r'" in filter_string and "RUNNING" in filter_string
            return [SimpleNamespace(info=SimpleNamespace(run_id=k), data=SimpleNamespace(tags={}))
                    for k, c in self.children.items() if c.status == "RUNNING"]

        def set_tag(self, run_id, key, value):
            (self if run_id == "r" else self.children[run_id]).tags[key] = value

        def set_terminated(self, run_id, status):
            target = self if run_id == "r" else self.children[run_id]
            target.status = status
            target.writes.append(status)

    store = Nested()
    assert guard.guard(store, "r", "interrupted by SIGTERM", 2**22 + 7, None, time.monotonic() + 30)
    assert store.status == "KILLED" and store.children["t1"].status == "KILLED"
    assert store.children["t1"].tags["error"] == "interrupted by SIGTERM"
    assert store.children["t2"].status == "FINISHED"  # a finished trial keeps its status
