"""The guard an interrupted step starts (recsys/interrupts.py), detached: it leaves the step's run KILLED
with its `error` tag, whatever happens to the step after the interrupt.

Its nested runs still RUNNING (a tune trial) are marked KILLED with it. `mlflow run` marks a run FAILED
after its command exits non-zero, whatever the run recorded itself (its
check for an already terminated run compares the status name with numbers), and a step whose store
hangs may never record anything. The guard waits until the step has exited, writes KILLED, and while
the `mlflow run` that launched it is still there, writes it back the moment that launcher overwrites it,
so the status a user reads once `mlflow run` returns is already KILLED. It retries a locked store (SQLite:
another writer may hold the lock) and gives up after ten minutes.

    python -m recsys.tracking.guard <run_id> <message> <step pid> [<launcher pid> ...]
"""

from __future__ import annotations

import sys
import time

from recsys.processes import alive

POLL_S = 0.02
GIVE_UP_S = 600.0


def mark_killed(client, run_id: str, msg: str) -> bool:
    """KILLED with the `error` tag (kept when the step wrote its own); True once it reads back."""
    try:
        run = client.get_run(run_id)
        if "error" not in run.data.tags:
            client.set_tag(run_id, "error", msg)
        if run.info.status != "KILLED":
            client.set_terminated(run_id, "KILLED")
            return client.get_run(run_id).info.status == "KILLED"
        return True
    except Exception:
        return False


def kill_children(client, run_id: str, msg: str) -> bool:
    """The run's nested runs still RUNNING (a tune trial the interrupt cut short, whose own end may not have
    reached a locked store) marked KILLED too; True once none is left RUNNING."""
    try:
        run = client.get_run(run_id)
        left = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}' and "
                                  "attributes.status = 'RUNNING'")
        for child in left:
            if "error" not in child.data.tags:
                client.set_tag(child.info.run_id, "error", msg)
            client.set_terminated(child.info.run_id, "KILLED")
        return True
    except Exception:
        return False


def guard(client, run_id: str, msg: str, step: int, launcher: int | list[int] | None, deadline: float) -> bool:
    launchers = [launcher] if isinstance(launcher, int) else list(launcher or [])
    launcher = launchers or None
    while alive(step) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    done = children = False
    while time.monotonic() < deadline:
        done = mark_killed(client, run_id, msg) or done
        children = children or (done and kill_children(client, run_id, msg))
        if launcher is None or not any(alive(p) for p in launchers):
            if mark_killed(client, run_id, msg) and children:  # once more after the launcher's last word
                return True
            if launcher is None and done and children:
                return True
        time.sleep(POLL_S if done else 0.5)  # a locked store: back off
    return False


def main(argv: list[str]) -> int:
    run_id, msg, pids = argv[0], argv[1], [int(p) for p in argv[2:]]
    import mlflow  # before the step is gone: ready to write the moment it is

    return 0 if guard(mlflow.MlflowClient(), run_id, msg, pids[0], pids[1:], time.monotonic() + GIVE_UP_S) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
