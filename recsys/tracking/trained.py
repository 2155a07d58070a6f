"""What a train run logs once its fit has ended: its scores and checkpoints, the plots, and the model
(the served bundle with the history it answers from), tagged and described."""

from __future__ import annotations

from pathlib import Path

import mlflow

from recsys.errors import RecsysError
from recsys.schema import TASKS
from recsys.tracking.pyfunc import log_served
from recsys.tracking.runs import epoch_history, log_metrics


def log_trained(result, data, model: str, lr: float, run_id: str, tmp: Path, register_as: str = "", ev=None) -> str:
    """Log a finished fit (`result`, training.FitResult) of `model` on `data`; `ev` its test evaluation
    when one was asked. Returns the logged model's URI."""
    from recsys import plots, scoring  # torch: not for the steps that only import tracking

    task = data.meta["task"]
    if result.best_score != result.best_score or abs(result.best_score) == float("inf"):
        raise RecsysError(f"training diverged: the best {result.monitor} is {result.best_score} (lr={lr}); "
                          "lower lr or raise the weight decays")
    mlflow.set_tags({"world_size": result.world_size, "loss": result.loss, "updates": result.updates,
                     **({"recipe": result.recipe.why} if result.recipe else {})})
    if result.recipe:  # what a next-item model's data chose (recsys/training/recipe.py)
        mlflow.log_params(result.recipe.params())
    log_metrics({**(ev.metrics if ev else {}), "train_seconds": result.seconds, "epochs_run": result.epochs,
                 f"best_{result.monitor.replace('/', '_')}": result.best_score})
    mlflow.log_artifact(result.checkpoint, "checkpoint")
    last = Path(result.checkpoint).with_name("last.ckpt")
    if last.exists():
        mlflow.log_artifact(last, "checkpoint")
    monitor = TASKS[task].key("val")
    curves = epoch_history(run_id, ["train/loss", "val/loss", monitor])
    for png in plots.training_plots(curves, result.module, data, ev, tmp, model):
        mlflow.log_artifact(png, "plots")
    weights = scoring.servable(result.checkpoint, tmp / "model.ckpt")
    model_uri = log_served(weights, data, tmp, register_as,
                           {"model": model, "dataset": data.meta.get("name", ""), "task": task})
    mlflow.set_tags({"model_uri": model_uri})
    key = TASKS[task].key("test")
    scored = f", {key} = {ev.metrics[key]:.4f}" if ev else ""
    mlflow.set_tag("mlflow.note.content", f"{model} on {data.meta.get('name')} ({task}, {data.meta['split']}): "
                   f"{result.epochs} epochs, {monitor} = {result.best_score:.4f}{scored}")
    return model_uri
