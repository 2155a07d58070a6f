"""Model registry: a literal name -> class dict and `build_model`."""

from __future__ import annotations

from torch import nn

from recsys.schema import check_model_name
from recsys.models.autoint import AutoInt
from recsys.models.dcn import DCN
from recsys.models.dcnv2 import DCNv2
from recsys.models.fm import FM
from recsys.models.global_mean import GlobalMean
from recsys.models.mf import MF
from recsys.models.ncf import NCF
from recsys.models.popularity import Popularity
from recsys.models.wide_deep import WideDeep

MODELS: dict[str, type[nn.Module]] = {
    "global_mean": GlobalMean,
    "popularity": Popularity,
    "mf": MF,
    "ncf": NCF,
    "fm": FM,
    "wide_deep": WideDeep,
    "dcn": DCN,
    "dcnv2": DCNv2,
    "autoint": AutoInt,
}
FEATURE_AWARE = {"fm", "wide_deep", "dcn", "dcnv2", "autoint"}


def check_name(name: str) -> None:
    check_model_name(name)


def build_model(name: str, n_users: int, n_items: int, features: dict | None = None, **hparams) -> nn.Module:
    """`features` is FeatureTables.spec() (cardinalities and widths), used by the feature-aware models."""
    check_name(name)
    extra = dict(features or {}) if name in FEATURE_AWARE else {}
    return MODELS[name](n_users, n_items, **hparams, **extra)
