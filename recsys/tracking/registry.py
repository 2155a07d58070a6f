"""The model registry: the version behind a URI, and the `champion` alias.
"""

from __future__ import annotations

import mlflow

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
