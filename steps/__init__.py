"""One thin script per MLflow entry point; run as `python -m steps.<name>` from the project root."""

import argparse
import logging
import os
import sys
import warnings

from recsys import interrupts
from recsys.errors import RecsysError
from recsys.values import integer  # noqa: F401  (the steps' integer parameters)

if sys.argv[:1] == ["-m"]:  # `python -m steps.<name>` (runpy sets argv[0] once the package is imported)
    interrupts.defer()  # first, before the seconds of importing mlflow, torch and Lightning

# Keep step output to what a person needs: no per-file download bars, no library tips and deprecations.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric", "mlflow.pyfunc",
             "mlflow.models.model", "mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.tracking.fluent"):
    logging.getLogger(name).setLevel(logging.ERROR)


def local_config(value: str, tmp) -> str:
    """A config given by URI (runs:/<tune run>/best_config.yaml, models:/..., s3://...) as a local file
    under `tmp`; a path as it is."""
    if ":/" not in value:
        return value
    from pathlib import Path

    from recsys import tracking

    return str(tracking.download(value, "config", Path(tmp) / "config"))


def choice(name: str, value: str, options) -> str:
    if value not in options:
        raise RecsysError(f"{name}={value!r} must be one of {', '.join(options)}")
    return value


def given(value: str) -> str:
    """MLproject's words for "not given" (auto, default, none) as an empty string (an empty default
    would show as a '' param in the UI)."""
    return "" if value in ("auto", "default", "none") else value


def overrides_given(a, names, rest: list[str]) -> dict:
    """Config overrides from the command line: the parser's `names` that were given, and any other
    --key value (MLflow appends an undeclared -P key=value as --key value)."""
    if len(rest) % 2 or any(not k.startswith("--") for k in rest[::2]):
        raise RecsysError(f"could not read parameters {rest}; pass them as -P key=value")
    return {**{k: getattr(a, k) for k in names if getattr(a, k) != ""},
            **{k[2:].replace("-", "_"): v for k, v in zip(rest[::2], rest[1::2])}}


def flag(name: str, value: str) -> bool:
    """A yes/no parameter: true/false, yes/no, 1/0 (any case); anything else is refused in one line."""
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "1.0"):
        return True
    if text in ("false", "no", "0", "0.0", "", "none"):
        return False
    raise RecsysError(f"{name}={value!r} must be true or false")


class ArgParser(argparse.ArgumentParser):
    """A bad argument is a user error: one line, run FAILED with the `error` tag (not argparse's usage + exit 2
    before any run exists)."""

    def error(self, message):
        raise RecsysError(f"{self.prog}: {message}; see python -m steps.{self.prog} --help")


def worker_rank() -> int:
    """Non-zero in a process a multi-process strategy started besides rank 0: Lightning re-runs the
    step's command with LOCAL_RANK set, and a multi-node launch sets NODE_RANK on the other nodes."""
    def env(name):
        try:
            return int(os.environ.get(name, "0") or 0)
        except ValueError:
            return 0
    return env("LOCAL_RANK") + env("NODE_RANK")
