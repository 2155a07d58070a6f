"""A step's run and its lifecycle: start or resume it, end it truthfully (FINISHED with the completion
tag written last, FAILED with an `error` tag, KILLED on a signal), nested trial runs, and what a run
logs beyond MLflow's own calls (params not yet on the run, counts as tags, the Lightning logger).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import mlflow

from recsys import interrupts
from recsys.errors import Interrupted, RecsysError
from recsys.tracking import mlflow_internals
from recsys.tracking.lineage import COMPLETE_TAG, REQUEST_TAG, request_fingerprint

SYSTEM_METRICS_STEPS = ("train", "evaluate", "tune", "blend")  # the long ones: MLflow's CPU / memory / GPU samples
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not four INFO lines a step


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
        run = mlflow.start_run(run_name=None if launched else name, log_system_metrics=name in SYSTEM_METRICS_STEPS)
        # `mlflow run` names runs at random; the step is said at once, so a run that fails or is interrupted
        # before its context is logged is still found by `tags.step`
        mlflow.set_tags({"mlflow.runName": name, "step": name})
        if launched and run.data.tags.get("mlflow.project.entryPoint"):  # what reuse must match exactly
            mlflow.set_tag(REQUEST_TAG, request_fingerprint(run.data.params))
    except Exception as e:
        print(f"error: could not start an MLflow run ({str(e).splitlines()[0]})", file=sys.stderr)
        sys.exit(2)
    # the guard waits for the launcher only where it would overwrite the run's end: an `mlflow run` CLI
    by_cli = launched == run.info.run_id and os.environ.get(interrupts.LAUNCHER_ENV) != str(os.getppid())
    mlflow_internals.shield_store(interrupts.shielded)
    previous = interrupts.handlers()  # put back for an in-process caller (a test, a notebook)
    try:
        with interrupts.step(name, run.info.run_id, by_cli, mlflow.get_tracking_uri(), _WIND_DOWN_S):
            yield run
            mlflow.set_tag(COMPLETE_TAG, "true")
    except RecsysError as e:
        interrupts.ignore()
        _end(run, "FAILED", str(e))
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        msg = e.message
        _end(run, "KILLED", msg)
        print(f"error: {msg}", file=sys.stderr)
        interrupts.exit_now(128 + e.signum)  # no exit hook or lingering thread may keep it alive
    except BaseException as e:
        interrupts.ignore()
        _end(run, "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    finally:
        interrupts.restore(previous)
    mlflow.end_run()


_WIND_DOWN_S = 60.0  # after an interrupt, the longest a step may take to record it before it exits anyway


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
        try:
            mlflow.set_tags({"optuna.state": state, "mlflow.runName": f"{name} (pruned)" if pruned else name,
                             **({} if pruned else {"error": error})})
            mlflow.end_run("KILLED" if pruned or interrupted else "FAILED")
        except Exception:  # a store locked by the interrupt's own writers: the step's guard ends it KILLED
            if not interrupted:
                raise
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

