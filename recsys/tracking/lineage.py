"""What a run records so that it can be traced and reproduced: the git commit, dirty flag and diff hash,
library versions and device, the data as a run input, and the run behind a model URI.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from pathlib import Path

import mlflow

from recsys.errors import RecsysError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

REQUEST_TAG = "recsys.request"
COMPLETE_TAG = "recsys.complete"  # written last: a run without it never counts as done, whatever its status


def canonical(value) -> str:
    """A parameter as reuse compares it: numbers as numbers (`4`, `4.0` and `4.00` are one value)."""
    text = str(value).strip()
    try:
        f = float(text)
    except ValueError:
        return text
    if f != f or f in (float("inf"), float("-inf")):
        return text
    return repr(int(f)) if f.is_integer() else repr(f)


def entry_params(entry: str, params: dict) -> dict[str, str]:
    """The params `mlflow run` logs for `entry` given `params`: every declared one (its default where not
    given) and every extra one."""
    from recsys.tracking import mlflow_internals

    return mlflow_internals.entry_params(PROJECT_ROOT, entry, params)


def _content(path: Path) -> str:
    """A local file's sha256; a folder's files by name, size and modification time (a dataset folder can
    be large)."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    files = sorted(f for f in path.rglob("*") if f.is_file())
    listing = [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(repr(listing).encode()).hexdigest()


def request_fingerprint(params: dict) -> str:
    """What a run was asked to do, as one hash: every param `mlflow run` logged (canonical values), and
    the content of a local config file or dataset folder it names (the same path with other content is
    another request). Reuse needs this to match exactly: a run with an extra or a different param,
    a default changed since, or an edited config file, is a miss."""
    import json

    items = {k: canonical(v) for k, v in params.items()}
    for key in ("config", "dataset"):
        value = str(params.get(key, ""))
        if value and "://" not in value and ":/" not in value and Path(value).exists():
            items[f"{key}#content"] = _content(Path(value))
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def git_info(root: Path = PROJECT_ROOT) -> dict:
    """Commit, dirty flag and a hash of the uncommitted diff (MLflow records only HEAD)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout

    commit = git("rev-parse", "HEAD").strip()
    if not commit:
        return {"git_commit": "none", "git_dirty": "unknown", "git_diff_hash": ""}
    status = git("status", "--porcelain")
    diff = git("diff", "HEAD") + status
    return {"git_commit": commit, "git_dirty": str(bool(status.strip())).lower(),
            "git_diff_hash": hashlib.sha256(diff.encode()).hexdigest()[:16] if status.strip() else ""}


def environment_info() -> dict:
    """Versions from package metadata (importing Lightning just to read its version costs seconds). The
    device and thread count only where torch is in use: prepare never imports it."""
    from importlib.metadata import version

    info = {"python_version": platform.python_version(), "torch_version": version("torch"),
            "lightning_version": version("pytorch-lightning"), "mlflow_version": version("mlflow"),
            "numpy_version": version("numpy"), "pandas_version": version("pandas")}
    torch = sys.modules.get("torch")
    if torch is not None:
        info.update(cuda_version=str(torch.version.cuda), torch_threads=str(torch.get_num_threads()),
                    device="cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available()
                    else f"cpu:{platform.processor() or platform.machine()}")
    else:
        info["device"] = f"cpu:{platform.processor() or platform.machine()}"
    return info


def log_context(extra_tags: dict | None = None) -> None:
    """Tags every run carries: git commit + dirty flag + diff hash, library versions, device."""
    tags = {**git_info(), **environment_info(), **(extra_tags or {})}
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_data_input(data, data_uri: str, context: str) -> None:
    """The data as a run input (Datasets in the UI): the model's page then links to what it was fitted
    or scored on. Schema and digest only; the rows stay in the prepare run's artifact."""
    m = data.meta
    kw = {"name": m.get("name", "data"), "digest": m["content_hash"][:16]}
    try:  # the artifact's own location where MLflow can resolve it (file://, s3://, ...)
        from mlflow.tracking.artifact_utils import get_artifact_uri

        run_id, path = data_uri.removeprefix("runs:/").split("/", 1)
        ds = mlflow.data.from_pandas(data.train.head(0), source=get_artifact_uri(run_id, path), **kw)
    except Exception:
        ds = mlflow.data.from_pandas(data.train.head(0), **kw)
    mlflow.log_input(ds, context=context)
    return ds


def check_data(data_uri: str, content_hash: str) -> None:
    """Data given as runs:/<prepare run>/... must hash to what that run recorded in the tracking store (an
    artifact rewritten consistently, hashes and all, is caught here)."""
    if not data_uri.startswith("runs:/"):
        return
    recorded = run_tags(data_uri.split("/")[1]).get("content_hash")
    if recorded and recorded != content_hash:
        raise RecsysError(f"{data_uri} hashes to {content_hash[:12]} but its prepare run recorded {recorded[:12]} "
                          "(the artifact changed after it was logged); run prepare again and pass its data URI")


def trained_by(model_uri: str) -> tuple[str, dict]:
    """The train run behind a model URI and its tags; a one-line error for a model this project did not train."""
    train_run = run_id_of_model(model_uri)
    tags = run_tags(train_run)
    if tags.get("step") not in ("train", "blend"):  # the true reason first, before any advice about its data
        raise RecsysError(f"model URI {model_uri!r} is not a recsys model (its run {train_run} is not a train "
                          "run of this project); pass the model a train run logged, runs:/<train_run_id>/model")
    return train_run, tags


def check_scorable(train_tags: dict, data, data_uri: str, k: int = 0) -> None:
    """Data a trained model can be scored on: as recorded (check_data), of its task, with its ids, and
    with at least `k` items."""
    check_data(data_uri, data.meta["content_hash"])
    if train_tags.get("task") and train_tags["task"] != data.meta["task"]:
        raise RecsysError(f"the model was trained for the {train_tags['task']} task but {data_uri} holds "
                          f"{data.meta['task']} data; evaluate it on data prepared with task={train_tags['task']}")
    if train_tags.get("ids_hash") and train_tags["ids_hash"] != data.meta["ids_hash"]:
        raise RecsysError(f"{data_uri} is another dataset than the model was trained on (user/item ids differ); "
                          "pass data prepared from the same dataset and filters")
    if k > data.n_items:
        raise RecsysError(f"k={k} is more than the {data.n_items:,} items of {data_uri}; use k <= {data.n_items}")


def run_tags(run_id: str) -> dict:
    try:
        return mlflow.get_run(run_id).data.tags
    except Exception:
        raise RecsysError(f"run {run_id!r} does not exist in {mlflow.get_tracking_uri()}; pass the URI a train "
                          "run printed (runs:/<train_run_id>/model)") from None


def run_id_of_model(model_uri: str) -> str:
    """The training run behind a runs:/ or models:/ URI."""
    if model_uri.startswith("runs:/"):
        parts = model_uri.split("/")
        if len(parts) < 3 or not parts[1]:
            raise RecsysError(f"model URI {model_uri!r} is malformed; use runs:/<train_run_id>/model")
        return parts[1]
    try:
        info = mlflow.models.get_model_info(model_uri)
        return info.run_id
    except Exception as e:
        raise RecsysError(f"model URI {model_uri!r} could not be resolved ({str(e).splitlines()[0][:200]})") from None
