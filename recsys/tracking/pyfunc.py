"""The served model: the pyfunc wrapper around a checkpoint and the serving tables, logging and loading it.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd

from recsys.errors import RecsysError
from recsys.tracking.lineage import PROJECT_ROOT

class RecommenderModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: input rows with `user` (raw id, string or integer) and optionally `item`.

    Without `item`: the top-`k` (param, default 10) unseen items per user with rank, score, title,
    year, genres and `fallback`; with `item`: one score per row (predicted rating, or P(positive) for
    implicit). A bad request raises MLflow's exception with INVALID_PARAMETER_VALUE, which the scoring
    server answers with HTTP 400 and the one-line message.
    """

    def load_context(self, context):
        from recsys.serving import load_bundle

        self.bundle = load_bundle(context.artifacts["checkpoint"], context.artifacts["serving"])

    # a DataFrame type hint: MLflow validates nothing from it (the logged signature is the contract)
    # and stops warning that the hints are missing
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            return self.bundle.predict(model_input, (params or {}).get("k", 10))
        except RecsysError as e:
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None


def log_model(checkpoint: Path, serving_dir: Path, register_as: str = "") -> str:
    """Log the pyfunc model (checkpoint + the serving tables) under `model`; return its URI. With
    `register_as`, the model is registered as a new version of that name."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType

    signature = ModelSignature(  # ids as strings or integers; `user` checked by the model (one-line 400s)
        inputs=Schema([ColSpec(AnyType(), "user", required=False), ColSpec(AnyType(), "item", required=False)]),
        params=ParamSchema([ParamSpec("k", "long", 10)]),
    )
    users = pd.read_parquet(Path(serving_dir) / "users.parquet")["raw_id"].head(2).tolist()
    info = mlflow.pyfunc.log_model(
        name="model", python_model=RecommenderModel(),
        artifacts={"checkpoint": str(checkpoint), "serving": str(serving_dir)},
        code_paths=[str(PROJECT_ROOT / "recsys")],
        pip_requirements=_requirements(), signature=signature, input_example=(pd.DataFrame({"user": users}), {"k": 10}),
        registered_model_name=register_as or None,
    )
    return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"torch=={version('torch').split('+')[0]}"] + [
        f"{p}=={version(p)}" for p in ("pytorch-lightning", "mlflow", "pandas", "pyarrow", "numpy", "pyyaml")]


def load_model(model_uri: str, dst: Path | None = None):
    if dst is not None:
        Path(dst).mkdir(parents=True, exist_ok=True)
    try:
        return mlflow.pyfunc.load_model(model_uri, dst_path=str(dst) if dst else None)
    except RecsysError:
        raise
    except Exception as e:
        raise RecsysError(f"model URI {model_uri!r} could not be loaded ({str(e).splitlines()[0][:200]}); "
                          "pass runs:/<train_run_id>/model or models:/<id>") from None


def load_bundle(model_uri: str, dst: Path | None = None):
    """The serving bundle (scorer and tables) of a recsys model, or a one-line error for any other pyfunc."""
    inner = load_model(model_uri, dst).unwrap_python_model()
    if not isinstance(inner, RecommenderModel):
        raise RecsysError(f"model URI {model_uri!r} is not a recsys model (its pyfunc is {type(inner).__name__}); "
                          "pass the model a train run of this project logged, runs:/<train_run_id>/model")
    return inner.bundle
