"""Chaining steps: reuse a complete run with the same parameters, or launch the entry point as a child
run (and stop its whole process group on an interrupt); the data a train run prepares when given none.
"""

from __future__ import annotations

import os
import signal

import mlflow
from mlflow.exceptions import ExecutionException

from recsys.errors import Interrupted, RecsysError
from recsys.tracking.lineage import PROJECT_ROOT, REQUEST_TAG, canonical, entry_params, git_info, request_fingerprint
from recsys.tracking.runs import COMPLETE_TAG, ignore_signals

def find_reusable_run(entry: str, params: dict[str, str], experiment_id: str) -> str | None:
    """A complete FINISHED run of `entry` that was asked exactly what `params` asks now, on the same
    commit with the same uncommitted diff; for train, its model must be logged.

    "Exactly" is the request fingerprint (`recsys.request`, recorded by every step `mlflow run` starts):
    all its params, defaults included, compared canonically, and the content of a local config file or
    dataset folder. A run given one more param (`-P lr=0.5`), or another value for any, is a miss, and
    upstream runs are covered because their URIs are params. A run without the completion tag
    (interrupted) or without a fingerprint (started otherwise) is never reused.
    """
    git = git_info()
    if git["git_commit"] == "none":
        return None
    try:
        wanted = request_fingerprint(entry_params(entry, params))
    except ExecutionException:  # a param MLproject would refuse: nothing to reuse; launching it says why
        return None
    query = (f"tags.`mlflow.project.entryPoint` = '{entry}' and attributes.status = 'FINISHED' "
             f"and tags.git_commit = '{git['git_commit']}' and tags.`{COMPLETE_TAG}` = 'true' "
             f"and tags.`{REQUEST_TAG}` = '{wanted}'")
    for run in mlflow.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], output_format="list"):
        if run.data.tags.get("git_diff_hash", "") != git["git_diff_hash"]:
            continue
        if entry == "train" and not _has_model(run.info.run_id):
            continue
        return run.info.run_id
    return None


def _has_model(run_id: str) -> bool:
    try:
        return any(a.path == "model" for a in mlflow.MlflowClient().list_artifacts(run_id)) or \
            bool(mlflow.search_logged_models(filter_string=f"source_run_id = '{run_id}'", output_format="list"))
    except Exception:
        return False


def launch(entry: str, params: dict[str, str], env_manager: str, experiment_id: str) -> str:
    """Run an entry point of this project as a child of the active run; return its run id.

    A failed child raises RecsysError naming the step, its run id and its own one-line error. On
    SIGINT/SIGTERM the child's whole process group (`mlflow run` starts it in its own session) is
    stopped, its run marked KILLED, and the interrupt goes on to end this run too.
    """
    if env_manager not in ("local", "virtualenv", "uv", "conda"):
        raise RecsysError(f"env_manager={env_manager!r} is not one of local, virtualenv, uv, conda")
    try:
        sub = mlflow.projects.run(str(PROJECT_ROOT), entry_point=entry, parameters=params, env_manager=env_manager,
                                  experiment_id=experiment_id, synchronous=False)
    except Exception as e:
        raise RecsysError(f"step {entry} could not start ({str(e).splitlines()[0][:300]})") from None
    try:
        ok = sub.wait()
    except Interrupted:
        ignore_signals()
        _stop(sub)
        raise
    if not ok:
        err = mlflow.get_run(sub.run_id).data.tags.get("error", "see the run's output")
        raise RecsysError(f"step {entry} failed (run {sub.run_id}): {err}")
    return sub.run_id


def _stop(sub, grace_s: float = 30) -> None:
    """SIGTERM to the child's process group; wait until every process in it is gone (SIGKILL after
    `grace_s`): the step inside gets the time to mark its own run KILLED."""
    import time

    proc = getattr(sub, "command_proc", None)
    if proc is not None:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                proc.poll()  # reap the group leader, or it lingers as a zombie in the group
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                continue
            break
    client = mlflow.MlflowClient()
    if client.get_run(sub.run_id).info.status not in ("KILLED", "FAILED"):
        client.set_tag(sub.run_id, "error", "interrupted: its parent main run was stopped")
        client.set_terminated(sub.run_id, "KILLED")


def default_data(task: str) -> str:
    """The data URI for a train run given no data: a complete prepare run of ml-100k for `task` with the
    default parameters on this commit, or a new one run as a child of the active run."""
    from recsys.schema import TASKS

    if task not in TASKS:
        raise RecsysError(f"task={task!r} is not one of {', '.join(TASKS)}")
    params = {"dataset": "ml-100k", "task": task, "split": "random" if task == "rating" else "leave_last_out",
              "positive_threshold": "4", "tie_break": "random", "seed": "42"}
    exp = mlflow.active_run().info.experiment_id
    rid = find_reusable_run("prepare", params, exp)
    if rid:
        print(f"data: reusing prepare run {rid}", flush=True)
    else:
        print("data: none given; preparing ml-100k for the " + task + " task", flush=True)
        rid = launch("prepare", params, "local", exp)
    mlflow.set_tag("data_prepare_run", rid)
    return f"runs:/{rid}/data"
