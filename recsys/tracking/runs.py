"""A step's run and its lifecycle: start or resume it, end it truthfully (FINISHED with the completion
tag written last, FAILED with an `error` tag, KILLED on a signal), nested trial runs, and what a run
logs beyond MLflow's own calls (params not yet on the run, counts as tags, the Lightning logger).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import mlflow

from recsys.errors import Interrupted, RecsysError, pending_interrupt
from recsys.tracking.lineage import REQUEST_TAG, request_fingerprint

COMPLETE_TAG = "recsys.complete"  # written last: a run without it never counts as done, whatever its status


_STEP: dict = {}  # the running step's name, run id and launcher, for the interrupt path


def _raise_interrupted(signum, frame):
    wind_down(signum)
    raise Interrupted(signum)


def interrupt_message(signum: int) -> str:
    msg = f"interrupted by {signal.Signals(signum).name}; what was logged is kept"
    if _STEP.get("name") != "train":
        return msg
    checkpoint = _STEP.get("checkpoint")
    if checkpoint is not None and Path(checkpoint).exists():
        return msg + f" (continue with -P resume_from={_STEP['run_id']})"
    return msg + " (before its first epoch ended: there is no checkpoint to resume from; train again)"


def resume_point(checkpoint: Path) -> None:
    """Where the running train step writes the checkpoint an interrupted run is resumed from: the
    interrupt's message offers `resume_from` only once that file exists."""
    _STEP["checkpoint"] = checkpoint


def wind_down(signum: int) -> None:
    """Once per step, when an interrupt arrives: start the guard that leaves its run KILLED whatever
    happens next, and a timer that ends the process if recording the interrupt hangs (a stuck store, a
    library's teardown): an interrupted step is gone within `_WIND_DOWN_S`."""
    if not _STEP or _STEP.get("winding_down"):
        return
    _STEP["winding_down"] = signum
    _keep_killed(_STEP["run_id"], interrupt_message(signum), _STEP["launcher"])
    timer = threading.Timer(_WIND_DOWN_S, _exit_now, (128 + signum,))
    timer.daemon = True
    timer.start()


def ignore_signals() -> None:
    """While a step winds down after an interrupt, a second Ctrl-C must not cut its bookkeeping short."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def step_run(name: str):
    """Resume the run `mlflow run` started (MLFLOW_RUN_ID), or start one, and end it truthfully.

    - success: the `recsys.complete` tag is written last, then the run ends FINISHED;
    - a RecsysError: one line on stderr, exit 2, run FAILED with the message as the `error` tag;
    - SIGINT / SIGTERM (Lightning would turn SIGTERM into a clean exit): run KILLED with an `error`
      tag, one line, exit 128 + signal;
    - anything else is a bug: run FAILED with the exception's first line as `error`, traceback kept.
    """
    launched = os.environ.get("MLFLOW_RUN_ID")  # by `mlflow run` (start_run takes it out of the environment)
    try:
        run = mlflow.start_run(run_name=None if launched else name)
        mlflow.set_tag("mlflow.runName", name)  # `mlflow run` names runs at random
        if launched and run.data.tags.get("mlflow.project.entryPoint"):  # what reuse must match exactly
            mlflow.set_tag(REQUEST_TAG, request_fingerprint(run.data.params))
    except Exception as e:
        print(f"error: could not start an MLflow run ({str(e).splitlines()[0]})", file=sys.stderr)
        sys.exit(2)
    _STEP.clear()
    _STEP.update(name=name, run_id=run.info.run_id, launcher=_LAUNCHER if launched == run.info.run_id else None)
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop_watching = threading.Event()
    threading.Thread(target=_watch_launcher, args=(stop_watching,), daemon=True).start()
    try:
        if pending_interrupt() is not None:  # it came while the step was importing
            raise Interrupted(pending_interrupt())
        yield run
        mlflow.set_tag(COMPLETE_TAG, "true")
    except RecsysError as e:
        ignore_signals()
        _end(run, "FAILED", str(e))
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        ignore_signals()
        wind_down(e.signum)  # when it came another way than through the handler (while importing, from tune)
        msg = interrupt_message(e.signum)
        _end(run, "KILLED", msg)
        print(f"error: {msg}", file=sys.stderr)
        _exit_now(128 + e.signum)  # no exit hook or lingering thread may keep it alive
    except BaseException as e:
        ignore_signals()
        _end(run, "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    finally:
        stop_watching.set()
        _STEP.clear()
        for sig, h in previous.items():
            signal.signal(sig, h)
    mlflow.end_run()


def _watch_launcher(stop: threading.Event, every_s: float = 0.5) -> None:
    """A step never outlives the command that started it: when its parent process is gone (SIGTERM to
    `mlflow run` ends it at once, without passing the signal on), the step stops as if interrupted."""
    while not stop.wait(every_s):
        if os.getppid() != _LAUNCHER:
            wind_down(signal.SIGTERM)  # from here too: the main thread may be stuck outside Python
            os.kill(os.getpid(), signal.SIGTERM)
            return


_LAUNCHER = os.getppid()  # the process that started this step (read before it can be gone)
_WIND_DOWN_S = 60.0  # after an interrupt, the longest a step may take to record it before it exits anyway


def _exit_now(code: int) -> None:
    """Leave at once once an interrupt is recorded: no library's exit hook or lingering thread can keep
    an interrupted step alive (everything it promised is written; temporary folders are already gone)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


# `mlflow run` marks a run FAILED after its command exits non-zero, whatever the run recorded itself (its
# check for an already terminated run compares the status name with numbers), and a step whose store
# hangs may never record anything. A detached guard waits until the step (and its launcher, when
# `mlflow run` started it) has exited, then makes the run KILLED with its `error` tag. It gets only the
# tracking settings of the environment, retries a locked store for a minute, and gives up after ten.
_KEEP_KILLED = """
import os, sys, time
run_id, msg, pids = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
def alive(pid):  # a zombie (exited, not yet reaped by its parent) is gone
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (ProcessLookupError, PermissionError):
        return False
    except OSError:
        return True
deadline = time.monotonic() + 600
while pids and time.monotonic() < deadline:
    pids = [p for p in pids if alive(p)]
    time.sleep(0.2)
import mlflow
client = mlflow.MlflowClient()
for _ in range(120):  # SQLite: another writer may hold the lock for a while; retry until KILLED reads back
    try:
        run = client.get_run(run_id)
        if "error" not in run.data.tags:
            client.set_tag(run_id, "error", msg)
        if run.info.status == "KILLED":
            break
        client.set_terminated(run_id, "KILLED")
    except Exception:
        pass
    time.sleep(0.5)
"""


def _keep_killed(run_id: str, msg: str, launcher: int | None) -> None:
    import subprocess

    keep = ("PATH", "HOME", "PYTHONPATH", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
    env = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "AWS_", "AZURE_", "GOOGLE_")) or k in keep}
    env.pop("MLFLOW_RUN_ID", None)
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    pids = [os.getpid()] + ([launcher] if launcher and launcher == os.getppid() else [])  # a launcher still there
    try:
        subprocess.Popen([sys.executable, "-c", _KEEP_KILLED, run_id, msg[:5000], *map(str, pids)], env=env,
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    except OSError:
        pass


def _end(run, status: str, error: str) -> None:
    """Record how the run ended; a store that refuses is one warning line (for an interrupt, the guard
    started by `wind_down` records KILLED once the step is gone)."""
    for record in (lambda: mlflow.set_tag("error", error[:5000]), lambda: mlflow.end_run(status)):
        try:
            record()
        except Exception as e:
            print(f"warning: could not record the run's end ({str(e).splitlines()[0][:200]})", file=sys.stderr)


@contextlib.contextmanager
def child_run(name: str, pruned_exc: type[BaseException] | None = None):
    """A nested run under the active one (a tune trial): FINISHED on success (tag `optuna.state`
    COMPLETE), KILLED when pruned (PRUNED) or interrupted (INTERRUPTED), FAILED otherwise (FAILED)."""
    run = mlflow.start_run(run_name=name, nested=True)
    try:
        yield run
    except BaseException as e:
        pruned = pruned_exc is not None and isinstance(e, pruned_exc)
        interrupted = isinstance(e, (Interrupted, KeyboardInterrupt))
        state = "PRUNED" if pruned else "INTERRUPTED" if interrupted else "FAILED"
        error = (f"interrupted by {signal.Signals(e.signum).name}" if isinstance(e, Interrupted) else
                 "interrupted" if interrupted else f"{type(e).__name__}: {str(e)[:300]}")
        mlflow.set_tags({"optuna.state": state, "mlflow.runName": f"{name} (pruned)" if pruned else name,
                         **({} if pruned else {"error": error})})
        mlflow.end_run("KILLED" if pruned or interrupted else "FAILED")
        raise
    mlflow.set_tag("optuna.state", "COMPLETE")
    mlflow.end_run()


def log_params(params: dict) -> None:
    """Log params not already on the run (`mlflow run` logs the entry point's own; re-logging a key
    with a differently spelt value, e.g. '.1' vs '0.1', would be an error)."""
    have = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    new = {k: str(v) for k, v in params.items() if k not in have}
    if new:
        mlflow.log_params(new)


def _is_count(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith("n_")


def log_metrics(values: dict, model_id: str | None = None, dataset=None) -> None:
    """Scores as metrics (attached to a LoggedModel and a dataset when given); counts (`.../n_rows`,
    `.../n_users`) as `count.` tags, out of the metric charts."""
    mlflow.log_metrics({k: float(v) for k, v in values.items() if v == v and not _is_count(k)},
                       model_id=model_id, dataset=dataset)
    counts = {f"count.{k}": str(int(v)) for k, v in values.items() if _is_count(k)}
    if counts:
        mlflow.set_tags(counts)


def log_model_metrics(metrics: dict, model_uri: str, dataset=None) -> None:
    """Metrics on the run, attached to the LoggedModel behind `model_uri` and the dataset (the model's page
    shows them)."""
    try:
        model_id = mlflow.models.get_model_info(model_uri).model_id
    except Exception:
        model_id = None
    log_metrics(metrics, model_id=model_id, dataset=dataset)


def download(uri: str, what: str, dst: Path | None = None) -> Path:
    """Local copy of an artifact URI (under `dst`, a folder the caller removes), or a one-line error."""
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst) if dst else None))
    except Exception as e:
        raise RecsysError(f"{what} URI {uri!r} could not be read ({str(e).splitlines()[0][:200]}); "
                          "pass an existing runs:/<run_id>/<path> URI") from None


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    client = mlflow.MlflowClient()
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def epoch_history(run_id: str, keys: list[str]) -> dict[str, list[float]]:
    return {k: [v for _, v in sorted(metric_history(run_id, k))] for k in keys}


def lightning_logger(run_id: str):
    """Lightning's MLFlowLogger bound to the current run and store (its defaults start a new run in ./mlruns)."""
    from pytorch_lightning.loggers import MLFlowLogger

    class RunLogger(MLFlowLogger):
        def log_hyperparams(self, params, *args, **kwargs):
            """The step logs the resolved config itself; Lightning's names (lr, ...) would clash
            with the entry point's own params."""

    return RunLogger(run_id=run_id, tracking_uri=mlflow.get_tracking_uri(), log_model=False)

