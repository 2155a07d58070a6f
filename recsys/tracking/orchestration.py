"""Chaining steps: reuse a complete run with the same parameters, or start the entry point as a child
run (its command directly, several at once if asked; stopped with all it started on an interrupt); the data a train run prepares when given none.
"""

from __future__ import annotations

import os
import time

import mlflow
from mlflow.exceptions import ExecutionException

from recsys import interrupts, processes
from recsys.errors import RecsysError
from recsys.tracking import mlflow_internals, prefork
from recsys.tracking.lineage import (COMPLETE_TAG, PROJECT_ROOT, REQUEST_TAG, entry_params, git_info,
                                     request_fingerprint)
from recsys.interrupts import LAUNCHER_ENV

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


class Child:
    """An entry point running as a child run of the active one: its run id and process."""

    def __init__(self, entry: str, sub):
        self.entry, self.run_id, self.proc = entry, sub.run_id, sub.command_proc
        self.cpu_s, self.peak_gib = 0.0, 0.0

    def sample(self) -> None:
        """Its CPU seconds so far (its own and its finished children's) and its peak resident memory, as
        the kernel counts them (read while it runs: a forked step is not this process's child to wait for)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                ticks = f.read().rsplit(")", 1)[1].split()[11:15]  # utime, stime, cutime, cstime
            with open(f"/proc/{self.proc.pid}/status") as f:
                hwm = next((line.split()[1] for line in f if line.startswith("VmHWM:")), "0")
        except (OSError, IndexError):
            return  # gone: the last sample stands
        self.cpu_s = max(self.cpu_s, sum(int(t) for t in ticks) / os.sysconf("SC_CLK_TCK"))
        self.peak_gib = max(self.peak_gib, int(hwm) / 2**20)  # kB

    def done(self) -> bool:
        return self.proc.poll() is not None

    def result(self) -> str:
        """The child's run id once it has exited; a failed child is a RecsysError naming the step, its
        run id and its own one-line error."""
        if self.proc.wait() != 0:
            err = mlflow.get_run(self.run_id).data.tags.get("error", "see the run's output")
            raise RecsysError(f"step {self.entry} failed (run {self.run_id}): {err}")
        return self.run_id


def start(entry: str, params: dict[str, str], env_manager: str, experiment_id: str,
          env: dict[str, str] | None = None, preload: bool = False) -> Child:
    """Start an entry point of this project as a child of the active run: its command runs directly
    (what a synchronous `mlflow.projects.run` does: no second `mlflow run` CLI), with `env` added to its
    environment. `preload`: steps that import torch come next (main), so the interpreter they fork from
    starts importing now, while this child runs (env_manager local: tracking/prefork.py)."""
    if env_manager not in ("local", "virtualenv", "uv", "conda"):
        raise RecsysError(f"env_manager={env_manager!r} is not one of local, virtualenv, uv, conda")
    # the local backend hands the child this process's environment: `env`, and that no `mlflow run` CLI
    # stands between (the step's guard then waits for no launcher), are put there for the launch only
    if preload and env_manager == "local":
        prefork.warm()
    env = {**(env or {}), LAUNCHER_ENV: str(os.getpid())}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        sub = mlflow_internals.start_entry_point(PROJECT_ROOT, entry, params, env_manager, experiment_id)
    except Exception as e:
        raise RecsysError(f"step {entry} could not start ({str(e).splitlines()[0][:300]})") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Child(entry, sub)


def launch(entry: str, params: dict[str, str], env_manager: str, experiment_id: str) -> str:
    """Run an entry point as a child of the active run and wait for it; return its run id."""
    def one():
        return (yield entry, params, entry)

    return run_pipelines({entry: one()}, 1, lambda *_: None, lambda *_: None, env_manager, experiment_id)[entry]


def stop(children: list[Child], grace_s: float = 30) -> None:
    """SIGTERM to each child still running and to everything it started; wait until all are gone (SIGKILL
    after `grace_s`): the step inside gets the time to mark its own run KILLED."""
    interrupts.ignore()
    processes.stop_trees([c.proc for c in children], grace_s)
    prefork.shutdown()  # main is ending: the interpreter its steps fork from goes too (an exit hook may not run)
    client = mlflow.MlflowClient()
    for c in children:
        if client.get_run(c.run_id).info.status not in ("KILLED", "FAILED", "FINISHED"):
            client.set_tag(c.run_id, "error", "interrupted: its parent main run was stopped")
            client.set_terminated(c.run_id, "KILLED")


def run_pipelines(pipelines: dict, parallel: int, found, record, env_manager: str, experiment_id: str,
                  env: dict[str, str] | None = None, preload: bool = False) -> dict:
    """Run chains of steps, up to `parallel` children at once. Each pipeline is a generator that yields
    (entry, params, label) and is sent the run id that answers it; what it returns is its result.
    `found(entry, params, label)` is a reusable run id or None; `record(label, run_id, reused, seconds, cpu_seconds,
    peak_gib)` is told each run a child made; `preload` as for `start`. A failed child stops the others and fails the caller; so does an interrupt."""
    from collections import deque

    results, running = {}, []

    def advance(name, gen, value, first=False):  # a pipeline's next step goes before the next pipeline's first
        try:
            (queue.append if first else queue.appendleft)((name, gen, gen.send(value)))
        except StopIteration as done:
            results[name] = done.value

    queue: deque = deque()
    for name, gen in pipelines.items():
        advance(name, gen, None, first=True)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                name, gen, (entry, params, label) = queue.popleft()
                rid = found(entry, params, label)
                if rid:
                    advance(name, gen, rid)
                else:
                    child = start(entry, params, env_manager, experiment_id, env, preload)
                    running.append((name, gen, label, child, time.perf_counter()))
            while running:
                for r in running:
                    r[3].sample()
                if any(r[3].done() for r in running):
                    break
                time.sleep(0.05)
            for item in [r for r in running if r[3].done()]:
                running.remove(item)
                name, gen, label, child, t0 = item
                rid = child.result()
                record(label, rid, False, time.perf_counter() - t0, child.cpu_s, child.peak_gib)
                advance(name, gen, rid)
    except BaseException:
        stop([r[3] for r in running])
        raise
    return results


def default_data(task: str) -> str:
    """The data URI for a train run given no data: a complete prepare run of ml-100k for `task` with the
    default parameters on this commit, or a new one run as a child of the active run."""
    from recsys.schema import prepare_param, task_of

    params = {**{k: prepare_param(k) for k in ("dataset", "positive_threshold", "tie_break", "seed")},
              "task": task, "split": task_of(task).split}
    exp = mlflow.active_run().info.experiment_id
    rid = find_reusable_run("prepare", params, exp)
    if rid:
        print(f"data: reusing prepare run {rid}", flush=True)
    else:
        print("data: none given; preparing ml-100k for the " + task + " task", flush=True)
        rid = launch("prepare", params, "local", exp)
    mlflow.set_tag("data_prepare_run", rid)
    return f"runs:/{rid}/data"


def longest_first(models: list[str], past: dict[str, float]) -> list[str]:
    """The order models start in: those with no past run on this data first, as listed, then the others by
    what they took last time, the longest first (so two side by side finish together, not one long model
    alone at the end); the order is printed."""
    order = [m for m in models if m not in past] + sorted((m for m in models if m in past), key=lambda m: -past[m])
    if past and len(models) > 1:
        print("order: " + ", ".join(f"{m} ({past[m]:.0f}s last time)" if m in past else m for m in order), flush=True)
    return order


def summary(wall: float, cost: dict[str, tuple[float, float, float]]) -> str:
    """main's last line: its wall time, the peak resident memory of the largest step, and what each step
    it ran cost (wall seconds and CPU seconds), the longest first. `cost`: label -> (seconds, CPU
    seconds, peak GiB)."""
    ran = sorted(((k, v) for k, v in cost.items() if v[0] > 0), key=lambda kv: -kv[1][0])
    peak = max((v[2] for _, v in ran), default=0.0)
    return (f"main: {wall:.0f}s wall; the largest step peaked at {peak:.2f} GiB RSS; "
            + (", ".join(f"{k} {v[0]:.0f}s ({v[1]:.0f}s CPU)" for k, v in ran) if ran else "every step reused"))
