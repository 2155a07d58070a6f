"""Model registry: a literal name -> class table, `model_class` and `build_model`.

Each model lives in `recsys/models/<name>.py`; the table names its class there, so the names can be
checked (by `main`, which never trains) without importing torch. Capabilities are declared on the
classes (recsys.models.base.Model), never probed.
"""

from __future__ import annotations

import importlib

from recsys.errors import RecsysError

MODEL_CLASSES = {  # name -> class in recsys/models/<name>.py
    "global_mean": "GlobalMean",
    "popularity": "Popularity",
    "mf": "MF",
    "ncf": "NCF",
    "fm": "FM",
    "wide_deep": "WideDeep",
    "dcn": "DCN",
    "dcnv2": "DCNv2",
    "autoint": "AutoInt",
    "sasrec": "SASRec",
    "gru4rec": "GRU4Rec",
    "itemknn": "ItemKNN",
    "ease": "EASE",
    "blend": "Blend",  # finished models combined (the blend step fits it; nothing trains it)
}
MODEL_NAMES = tuple(n for n in MODEL_CLASSES if n != "blend")  # what train, tune and main take


def check_model_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise RecsysError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")


def requested(text: str) -> tuple[list[str], list[str]]:
    """The models a comma-separated list asks for, each once and in order, each a known name; and the
    names listed more than once."""
    asked = [m.strip() for m in text.split(",") if m.strip()]
    if not asked:
        raise RecsysError("models= names no model; pass one or more, e.g. models=mf,ncf")
    for m in asked:
        check_model_name(m)
    return list(dict.fromkeys(asked)), sorted({m for m in asked if asked.count(m) > 1})


def model_class(name: str):
    if name not in MODEL_CLASSES:
        check_model_name(name)
    return getattr(importlib.import_module(f"recsys.models.{name}"), MODEL_CLASSES[name])


def build_model(name: str, n_users: int, n_items: int, features: dict | None = None, **hparams):
    """`features` is FeatureTables.spec() (cardinalities and widths), used by the feature-aware models."""
    cls = model_class(name)
    return cls(n_users, n_items, **hparams, **(dict(features or {}) if cls.uses_features else {}))
