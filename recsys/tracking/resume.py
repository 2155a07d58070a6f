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
    import json

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
        overrides = json.loads(tags.get("overrides", "{}"))
    except ValueError:
        overrides = None
    if not isinstance(overrides, dict):
        raise RecsysError(f"train run {run_id}'s overrides tag is not the JSON object train records; resume it with "
                          f"config=runs:/{run_id}/config.yaml, or start the training again")
    # the model it trained is its `model` tag: its `model` param is what was asked, `auto` when resumed;
    # likewise its data is the URI it recorded (`data_uri`): a resumed run's `data` param reads `auto`
    trained = tags.get("model") or params.get("model", "mf")
    if model and model != trained:
        raise RecsysError(f"run {run_id} trained {trained}, not {model}; resume it without model (or with "
                          f"model={trained})")
    data = params.get("data_uri") or tags.get("data_uri") or params["data"]
    return {"data": data, "model": trained, "overrides": overrides, "task": tags.get("task", "")}


def _value(v):
    """A parameter as YAML reads it (`-P embedding_dim=128` arrives as the string "128")."""
    import yaml

    try:
        return yaml.safe_load(v) if isinstance(v, str) else v
    except yaml.YAMLError:
        return v


def check_unchanged(run_id: str, old: dict, logged: dict, data: str, task: str, overrides: dict,
                    config_file: str) -> None:
    """What a resumed run was stays what it is: its data, its task and every model key (each fixes a
    tensor's shape or what the weights mean); a one-line error names what differs and what may change."""
    may = "resume changes only training and runtime keys (epochs, patience, lr, threads...)"
    if data and data != old["data"]:
        raise RecsysError(f"resume_from={run_id} trained on {old['data']}, not {data}; {may}: drop data, or start a "
                          "new run on the other data")
    if task and old["task"] and task != old["task"]:
        raise RecsysError(f"resume_from={run_id} trained the {old['task']} task, not {task}; {may}: drop task, or "
                          "start a new run for that task")
    from recsys import config

    asked = {**((config.read_document(config_file).get("model") or {}) if config_file else {}), **overrides}
    model = logged.get("model") or {}
    for key, value in asked.items():
        if key in model and _value(value) != model[key]:
            raise RecsysError(f"resume_from={run_id} trained with {key}={model[key]!r}, not {value!r}: a model key "
                              f"fixes the weights' shape or meaning; {may}")


def resume_request(run_id: str, model: str, config_file: str, overrides: dict, tmp: Path, data: str = "",
                   task: str = ""):
    """What a resumed train run trains: (data URI, model, config file, overrides, checkpoint). Its own
    resolved config, then what is given now; a config file given now replaces it, over its overrides."""
    from recsys import config
    from recsys.tracking.runs import download

    old = resumable(run_id, model)
    logged_file = download(f"runs:/{run_id}/config.yaml", "config", tmp / "resumed")
    check_unchanged(run_id, old, config.read_document(logged_file), data, task, overrides, config_file)
    if not config_file:
        config_file = str(logged_file)
    else:
        overrides = {**old["overrides"], **overrides}
    checkpoint = download(f"runs:/{run_id}/checkpoint/last.ckpt", "checkpoint", tmp / "resume")
    return old["data"], old["model"], config_file, overrides, checkpoint
