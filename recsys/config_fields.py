"""The fields a config may hold and their rules (recsys/config.py composes the layers and loads them):
`Training` and `Runtime` (configs/defaults.yaml explains each key), and a model's constructor keywords as a
pydantic model with the ranges MODEL_RANGES gives them. Strict: unknown keys, infinities, NaN and true /
false where a number belongs are errors."""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from recsys.models import model_class
from recsys.schema import LOSS_NAMES

LOSSES = ("auto", *LOSS_NAMES)
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
MAX_LEN = 1024  # longest history a sequence model reads (SASRec's papers use 50-200)



def _not_bool(value):
    """true / false is not a number here (pydantic's lax mode would read it as 1 / 0): the one integer rule
    (recsys/values.py) refuses it everywhere else."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


NotBool = BeforeValidator(_not_bool)
NonNegative = Annotated[float, Field(ge=0), NotBool]
PositiveInt = Annotated[int, Field(gt=0), NotBool]
NonNegativeInt = Annotated[int, Field(ge=0), NotBool]
Fraction = Annotated[float, Field(ge=0, lt=1), NotBool]


class Training(BaseModel):
    """The optimisation; defaults in configs/defaults.yaml (where each key is explained)."""
    model_config = STRICT
    lr: Annotated[float, Field(gt=0, le=1e6), NotBool]  # beyond, an optimizer step overflows float32
    epochs: PositiveInt
    min_epochs: NonNegativeInt
    patience: NonNegativeInt
    batch_size: PositiveInt
    weight_decay: NonNegative
    net_weight_decay: NonNegative
    bias_weight_decay: NonNegative
    optimizer: Literal["adam", "adamw"]
    scheduler: Literal["none", "onecycle"]
    loss: Literal[LOSSES]
    num_negatives: PositiveInt
    updates: Literal["auto", "dense", "rows"]
    val_users: NonNegativeInt
    epoch_tflop: Annotated[float, Field(gt=0), NotBool]
    exclude_seen: bool
    seed: NonNegativeInt


class Runtime(BaseModel):
    """Where and how the training runs: never changes what a model is."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True)  # devices=2
    threads: NonNegativeInt
    accelerator: str
    devices: str
    strategy: str
    num_nodes: PositiveInt
    precision: Literal["32-true", "bf16-mixed", "16-mixed"]


class TrainConfig(Training):
    """A run's resolved training settings; `runtime` is kept apart from the hyper-parameters."""
    runtime: Runtime


# constraints of model keywords by name (a model constructor states its types, not its ranges)
MODEL_RANGES = {"embedding_dim": PositiveInt, "mf_dim": PositiveInt, "mlp_dim": PositiveInt, "num_heads": PositiveInt,
                "num_layers": PositiveInt, "cross_layers": PositiveInt, "damping": NonNegative, "init_std": NonNegative,
                "dropout": Fraction, "deep_dropout": Fraction, "num_blocks": PositiveInt,
                # the [n_users, max_len] history buffer and [batch, max_len, d] activations grow with it
                "max_len": Annotated[int, Field(gt=0, le=MAX_LEN), NotBool],
                "hidden_dim": PositiveInt, "k": PositiveInt, "shrink": NonNegative,
                "l2": Annotated[float, Field(gt=0), NotBool]}


@lru_cache(maxsize=None)
def model_schema(name: str) -> type[BaseModel]:
    """A pydantic model of `name`'s constructor keywords (after n_users, n_items; not the feature
    widths the data supplies), their defaults the constructor's."""
    fields = {}
    for key, p in inspect.signature(model_class(name).__init__).parameters.items():
        if key in ("self", "n_users", "n_items") or p.kind is not p.POSITIONAL_OR_KEYWORD:
            continue
        kind = MODEL_RANGES.get(key, p.annotation)
        if isinstance(p.default, (list, tuple)):  # layer widths; empty only where the default is (optional tower)
            kind = list[PositiveInt] if not p.default else Annotated[list[PositiveInt], Field(min_length=1)]
        fields[key] = (kind, list(p.default) if isinstance(p.default, tuple) else p.default)
    return create_model(f"{name}_model", __config__=STRICT, **fields)


def valid_keys(name: str) -> list[str]:
    return [*model_schema(name).model_fields, *Training.model_fields, *Runtime.model_fields]


def set_by_hand(overrides: dict) -> list[str]:
    """What a run's `-P key=value` changed of its model's shipped config, as `key=value` (sorted): every
    training and model key but the seed (a run's identity, shown apart) and where the run ran (Runtime's
    keys, which never change what a model is; precision does, so it counts)."""
    where = set(Runtime.model_fields) - {"precision"}
    return [f"{k}={v}" for k, v in sorted(overrides.items()) if k not in where and k != "seed"]
