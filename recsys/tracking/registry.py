"""The model registry: the version behind a URI, and the `champion` alias.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from recsys.tracking.lineage import run_tags

CHAMPION = "champion"


def check_name(name: str) -> None:
    """A registered model name the registry will take, checked before anything is trained or logged."""
    from mlflow.exceptions import MlflowException
    from recsys.errors import RecsysError
    from recsys.tracking.mlflow_internals import validate_model_name

    try:
        validate_model_name(name)
    except MlflowException as e:
        raise RecsysError(f"register_as={name!r} cannot name a registered model ({str(e).splitlines()[0]}); "
                          "use letters, digits, '-', '_' or '.'") from None


def registered_version(model_uri: str, train_run: str):
    """(name, version) of the registered model version behind a URI or a train run, or None."""
    client = mlflow.MlflowClient()
    try:
        ref = model_uri.removeprefix("models:/")
        if model_uri.startswith("models:/") and ("@" in ref or "/" in ref):  # models:/m-<id> is a LoggedModel
            if "@" in ref:
                name, alias = ref.split("@", 1)
                v = client.get_model_version_by_alias(name, alias)
            else:
                name, version = ref.split("/", 1)
                v = client.get_model_version(name, version)
            return v.name, str(v.version)
        found = client.search_model_versions(f"run_id = '{train_run}'")
    except Exception:
        return None
    return (found[0].name, str(found[0].version)) if found else None


def champion_version(name: str):
    """(version, its tags) holding the champion alias, or None."""
    client = mlflow.MlflowClient()
    try:
        v = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:
        return None
    return str(v.version), dict(v.tags), v.run_id


def set_champion(name: str, version: str) -> None:
    mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, version)


def tag_version(name: str, version: str, tags: dict) -> None:
    client = mlflow.MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, str(v))


def _on_validation(name: str, version: str, module, data, protocol: str, eval_users: int, key: str, tmp: Path):
    """(per-user table, metric) of a registered version on the validation split: a blend's cross-fitted
    one (its weights were fitted on validation, so scoring it there again would judge it on its own
    training rows), anything else scored here."""
    import pandas as pd

    from recsys import blend, evaluation, paired

    run_id = mlflow.MlflowClient().get_model_version(name, version).run_id
    if run_id and run_tags(run_id).get("step") == "blend":
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=blend.OOF_FILE, dst_path=str(tmp))
        per_user = pd.read_parquet(local)
        return per_user, paired.metric(per_user, data.meta["task"])
    ev = evaluation.evaluate(module, data, "val", [10], protocol, eval_users)
    return ev.per_user, ev.metrics[key]


def promote(name: str, version: str, module, data, protocol: str, eval_users: int, tmp: Path) -> str:
    """Move `champion` to this version only when it is significantly better than the current champion on
    the validation split: both scored here on the same rows and protocol (a blend by its out-of-fold
    per-user table: never on the rows its weights were fitted to), the report's paired per-user
    test (the difference's 95% interval excludes 0). Test decides nothing. The evidence goes on the run
    and on the model version."""
    from recsys import evaluation, paired
    from recsys.schema import TASKS
    from recsys.tracking.pyfunc import load_bundle

    task = data.meta["task"]
    key = TASKS[task].key("val")
    setup = {k: v for k, v in evaluation.setup_tags(data.meta, "val", protocol).items()
             if k in ("dataset", "task", "data_split", "tie_break", "protocol")}
    mine = _on_validation(name, version, module, data, protocol, eval_users, key, tmp / "candidate")
    value = mine[1]
    tag_version(name, version, {**setup, "metric_key": key, "metric": f"{value:.6f}"})
    champ = champion_version(name)
    evidence = {}
    if champ is None:
        decision, champ_value, champ_v = "promoted: first champion", float("nan"), ""
    elif champ[0] == version:
        decision, champ_value, champ_v = "is the champion", value, version
    else:
        champ_v, champ_tags, champ_run = champ
        other = {k: champ_tags.get(k) for k in setup}
        champ_ids = run_tags(champ_run).get("ids_hash") if champ_run else None
        if other != setup or champ_ids != data.meta["ids_hash"]:
            decision, champ_value = f"kept: the champion (version {champ_v}) is for another setup {other}", float("nan")
        else:  # score the champion here, on exactly these rows
            champ_module = load_bundle(f"models:/{name}/{champ_v}", tmp / "champion").module
            theirs = _on_validation(name, champ_v, champ_module, data, protocol, eval_users, key, tmp / "champion")
            champ_value = theirs[1]
            test = paired.paired_test(mine[0], theirs[0], task)
            unit = TASKS[task].unit
            evidence = {"registry.paired_delta": f"{test['delta']:.6f}", "registry.paired_se": f"{test['se']:.6f}",
                        "registry.paired_users": str(test["n"])}
            said = f"paired Δ{unit} {test['delta']:+.4f} ± {test['se']:.4f} over {test['n']} users on validation"
            decision = (f"promoted over version {champ_v} ({said})" if test["better"]
                        else f"kept version {champ_v}: not significantly better ({said})")
    if decision.startswith("promoted"):
        set_champion(name, version)
    record = {"registry.model": name, "registry.version": version, "registry.champion_before": champ_v,
              "registry.metric_key": key, "registry.champion_metric": f"{champ_value:.6f}",
              "registry.candidate_metric": f"{value:.6f}", "registry.decision": decision, **evidence}
    mlflow.set_tags(record)
    tag_version(name, version, {k.replace("registry.", "promotion."): v for k, v in record.items()
                                         if k not in ("registry.model", "registry.version")})
    return f"{name} version {version} ({key}={value:.4f}): {decision}"
