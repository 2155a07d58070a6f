"""The served model: the pyfunc wrapper around a checkpoint and the serving tables, logging and loading it.

A model is logged from code (`served_model.py`, MLflow's models-from-code): it holds code, tensors and
tables, no pickle. Its files are hashed once logged (`model_files.json` beside it in the run, anchored by
the run's `model_files_hash` tag), and this project's loaders refuse a model whose files differ, naming
the file, before anything in it is parsed or run.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException

from recsys.errors import RecsysError
from recsys.tracking.lineage import PROJECT_ROOT, run_id_of_model, run_tags

CODE = Path(__file__).with_name("served_model.py")
# what a served model loads: the scoring path (models, scoring, serving) and the pyfunc's own package; not
# training (Lightning), tuning, evaluation or reports. tests/test_serving.py loads one with Lightning blocked.
SERVED_CODE = ("__init__.py", "errors.py", "schema.py", "values.py", "progress.py", "ranking.py", "baselines.py",
               "scoring.py", "interrupts.py", "data/__init__.py", "data/known.py", "models", "serving", "tracking")


class RequestError(MlflowException):
    """A bad request, answered with HTTP 400 and its one line. MLflow's scoring server rewrites an error's
    message to "Failed to predict data '<the whole request>'. \\nError: <message>" (lines, and the
    client's data echoed back); that rewrite is dropped here, so a client reads only the line."""

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value) -> None:
        value = str(value)
        if hasattr(self, "_line") and value.startswith("Failed to predict data"):
            return  # the server's rewrite: keep the line
        self._line = " ".join(value.split())


MANIFEST, MANIFEST_TAG = "model_files.json", "model_files_hash"

class PyfuncModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: input rows with `user` (raw id, string or integer) and optionally `item`.

    Without `item`: the top-`k` (param, default 10) unseen items per user with rank, score, title,
    year, genres and `fallback`; with `item`: one score per row (predicted rating, or for implicit the
    sigmoid of the raw score: serving/bundle.py). A bad request raises MLflow's exception with INVALID_PARAMETER_VALUE, which the scoring
    server answers with HTTP 400 and the one-line message.
    """

    def load_context(self, context):
        import os
        import sys

        from recsys.serving import Bundle

        try:
            self.bundle = Bundle(context.artifacts["checkpoint"], context.artifacts["serving"])
        except RecsysError as e:
            if "__pyfunc_model_path__" not in os.environ:  # this project's loaders end the run with the line
                raise
            # MLflow's scoring server starting (e.g. a checkpoint holding more than tensors): one line, exit
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    # a DataFrame type hint: MLflow validates nothing from it (the logged signature is the contract)
    # and stops warning that the hints are missing
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            return self.bundle.predict(model_input, (params or {}).get("k", 10))
        except RecsysError as e:
            raise RequestError(str(e), error_code=INVALID_PARAMETER_VALUE) from None


def log_model(checkpoint: Path, serving_dir: Path, register_as: str = "", describe: dict | None = None,
              extra_tags: dict | None = None) -> str:
    """Log the pyfunc model (checkpoint + the serving tables) under `model`; return its URI. With
    `register_as`, the model is registered as a new version of that name. `describe` (model, dataset,
    task) tags the LoggedModel, so the UI's model list tells the models apart: its name stays `model`,
    which is what `runs:/<run id>/model` resolves; `extra_tags` tag it too (not its model type)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    # no input schema: the model checks `user` / `item` itself (one-line 400s), ids come as strings or
    # integers, and MLflow's CSV parser cannot read a body against a schema of untyped columns
    # `k` as a double: MLflow passes any number through (2.5 included) to the model's own one-line rule; a
    # string or a bool is refused by MLflow itself first (docs/serving.md: what a client reads then)
    signature = ModelSignature(inputs=None, params=ParamSchema([ParamSpec("k", "double", 10.0)]))
    users = pd.read_parquet(Path(serving_dir) / "users.parquet")["raw_id"].head(2).tolist()
    info = mlflow.pyfunc.log_model(
        name="model", python_model=str(CODE),
        artifacts={"checkpoint": str(checkpoint), "serving": str(serving_dir)},
        code_paths=[str(_served_code(Path(serving_dir).parent / "code" / "recsys"))],
        pip_requirements=_requirements(), signature=signature, input_example=(pd.DataFrame({"user": users}), {"k": 10}),
        registered_model_name=register_as or None,
        tags={k: str(v) for k, v in {**(describe or {}), **(extra_tags or {})}.items()} or None,
        model_type=" ".join(str(v) for v in (describe or {}).values()) or None,
    )
    _record_files(info.model_uri)
    return info.model_uri


def log_served(weights: Path, data, tmp: Path, register_as: str, describe: dict) -> str:
    """A model as every step logs it: the weights, the serving tables of `data` exported beside them, and
    the tag saying what it knows of each user (history_splits)."""
    from recsys.data import known
    from recsys.serving import export

    return log_model(weights, export(data, Path(tmp) / "serving"), register_as, describe,
                     {"history_splits": "+".join(known.SPLITS)})


# written by MLflow when a registered version is downloaded (its name and number): checked on its own
REGISTERED_META = "registered_model_meta"


def _file_hashes(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file() and str(f.relative_to(folder)) != REGISTERED_META}


def _check_registered_meta(local: Path, model_uri: str) -> None:
    import yaml

    meta = Path(local) / REGISTERED_META
    if not meta.exists():
        return
    try:
        doc = yaml.safe_load(meta.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict) or not set(doc) <= {"model_name", "model_version"} or \
            not all(v is None or isinstance(v, (str, int)) for v in doc.values()):
        raise RecsysError(f"model {model_uri!r} was refused: its file {REGISTERED_META} is not the name and version "
                          "MLflow writes there (nothing in it was loaded)")


def _record_files(model_uri: str) -> None:
    """Hash every file of the model as the store holds it; the manifest goes beside the model in the run,
    its hash into the run's tags."""
    import hashlib
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        text = json.dumps(_file_hashes(local), indent=1, sort_keys=True)
    mlflow.log_text(text, MANIFEST)
    mlflow.set_tag(MANIFEST_TAG, hashlib.sha256(text.encode()).hexdigest())


def verify_files(local: Path, run_id: str, model_uri: str) -> None:
    """The downloaded model's files are exactly those its train run hashed, or a one-line error naming
    the first that differs (a planted pickle, an edited table or MLmodel, a file added or removed)."""
    import hashlib
    import json
    import tempfile

    recorded = run_tags(run_id).get(MANIFEST_TAG)
    if not recorded:
        ours = CODE.name in (Path(local) / "MLmodel").read_text(errors="replace") if (Path(local) / "MLmodel").is_file() \
            else False
        if not ours:  # never loaded: another project's pyfunc may be a pickle
            raise RecsysError(f"model URI {model_uri!r} is not a recsys model (its run {run_id} is not a train run "
                              "of this project); pass the model a train run logged, runs:/<train_run_id>/model")
        raise RecsysError(f"model {model_uri!r} has no recorded file hashes (its run {run_id} did not log "
                          f"{MANIFEST}); train it again with this version of the project")
    with tempfile.TemporaryDirectory(prefix="recsys-manifest-") as tmp:
        try:
            text = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MANIFEST,
                                                            dst_path=tmp)).read_text()
        except Exception:
            text = ""
    if hashlib.sha256(text.encode()).hexdigest() != recorded:
        raise RecsysError(f"{MANIFEST} of run {run_id} is missing or changed since it was logged; the model "
                          f"{model_uri!r} cannot be checked and is refused: train it again")
    _check_registered_meta(local, model_uri)
    want, have = json.loads(text), _file_hashes(Path(local))
    for name in sorted(set(want) | set(have)):
        if want.get(name) != have.get(name):
            what = "was added" if name not in want else "is missing" if name not in have else "changed"
            raise RecsysError(f"model {model_uri!r} was refused: its file {name} {what} since it was logged "
                              "(nothing in it was loaded); load models only from stores you trust, or train again")


def _served_code(out: Path) -> Path:
    """A copy of the part of `recsys` a served model runs (SERVED_CODE), at `out`."""
    import shutil

    root = PROJECT_ROOT / "recsys"
    for part in SERVED_CODE:
        src, dst = root / part, out / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    return out


def _requirements() -> list[str]:
    """What inference imports (no Lightning: scoring.py rebuilds a model from plain weights)."""
    from importlib.metadata import version

    return [f"torch=={version('torch').split('+')[0]}"] + [
        f"{p}=={version(p)}" for p in ("mlflow", "pandas", "pyarrow", "numpy", "pyyaml")]


def load_model(model_uri: str, dst: Path | None = None):
    """A recsys model, loaded only after its files are checked against what its train run recorded."""
    import tempfile

    run_id = run_id_of_model(model_uri)
    if dst is None:
        dst = Path(tempfile.mkdtemp(prefix="recsys-model-"))
    Path(dst).mkdir(parents=True, exist_ok=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except Exception as e:
        raise RecsysError(f"model URI {model_uri!r} could not be loaded ({str(e).splitlines()[0][:200]}); "
                          "pass runs:/<train_run_id>/model or models:/<id>") from None
    verify_files(local, run_id, model_uri)
    try:
        return mlflow.pyfunc.load_model(str(local))
    except RecsysError:
        raise
    except Exception as e:
        raise RecsysError(f"model URI {model_uri!r} could not be loaded ({str(e).splitlines()[0][:200]}); "
                          "pass runs:/<train_run_id>/model or models:/<id>") from None


def load_bundle(model_uri: str, dst: Path | None = None):
    """The serving bundle (scorer and tables) of a recsys model, or a one-line error for any other pyfunc."""
    inner = load_model(model_uri, dst).unwrap_python_model()
    if type(inner).__name__ != PyfuncModel.__name__ or not hasattr(inner, "bundle"):
        raise RecsysError(f"model URI {model_uri!r} is not a recsys model (its pyfunc is {type(inner).__name__}); "
                          "pass the model a train run of this project logged, runs:/<train_run_id>/model")
    return inner.bundle
