"""Resuming a train run: what it trained, on which data, with which overrides, read from what the run
recorded (its tags and `data_uri`; the params `mlflow run` logs before a step runs read `auto` on a
resumed run)."""

from __future__ import annotations

from pathlib import Path

import mlflow

from recsys.errors import RecsysError


def resumable(run_id: str, model: str = "") -> dict:
    """data, model and overrides of a train run whose interrupted training can be continued; `model`, when
    given, must be the one it trained."""
    import ast

    try:
        run = mlflow.get_run(run_id)
    except Exception:
        raise RecsysError(f"resume_from={run_id!r}: no such run; pass the id of an interrupted train run") from None
    tags, params = run.data.tags, run.data.params
    if tags.get("step") != "train" or "data" not in params:
        raise RecsysError(f"resume_from={run_id!r} is not a train run; pass the id of an interrupted train run")
    if not any(a.path == "checkpoint/last.ckpt" for a in mlflow.MlflowClient().list_artifacts(run_id, "checkpoint")):
        raise RecsysError(f"train run {run_id} logged no checkpoint/last.ckpt (it stopped before its first epoch "
                          "ended); start the training again instead")
    try:
        overrides = ast.literal_eval(tags.get("overrides", "{}"))
    except (ValueError, SyntaxError):
        overrides = {}
    # the model it trained is its `model` tag: its `model` param is what was asked, `auto` when resumed;
    # likewise its data is the URI it recorded (`data_uri`): a resumed run's `data` param reads `auto`
    trained = tags.get("model") or params.get("model", "mf")
    if model and model != trained:
        raise RecsysError(f"run {run_id} trained {trained}, not {model}; resume it without model (or with "
                          f"model={trained})")
    data = params.get("data_uri") or tags.get("data_uri") or params["data"]
    return {"data": data, "model": trained, "overrides": overrides}


def resume_request(run_id: str, model: str, config_file: str, overrides: dict, tmp: Path):
    """What a resumed train run trains: (data URI, model, config file, overrides, checkpoint). Its own
    resolved config, then what is given now; a config file given now replaces it, over its overrides."""
    from recsys import config
    from recsys.tracking.runs import download

    old = resumable(run_id, model)
    if not config_file:
        config_file = str(config.resolved_file(download(f"runs:/{run_id}/config.yaml", "config", tmp / "resumed"),
                                               tmp / "resumed.yaml"))
    else:
        overrides = {**old["overrides"], **overrides}
    checkpoint = download(f"runs:/{run_id}/checkpoint/last.ckpt", "checkpoint", tmp / "resume")
    return old["data"], old["model"], config_file, overrides, checkpoint
