"""Strict model configs: `configs/<model>.yaml` = a `model:` section (constructor keywords), a
`training:` section (the fields of `TrainConfig`), and optionally `implicit:`, keys of either section
whose tuned value differs for the implicit task.

Unknown keys, missing keys, wrong types and out-of-range values are errors raised before any work
starts; overrides (`-P key=value`) must name a field of either section.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from recsys.errors import RecsysError
from recsys.models import MODELS, check_name

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
FEATURE_KWARGS = {"user_cont_dim", "user_cards", "item_cont_dim", "item_cards"}


@dataclass
class TrainConfig:
    lr: float = 0.001
    epochs: int = 20
    min_epochs: int = 1  # patience only starts counting after this many epochs
    patience: int = 3
    batch_size: int = 1024
    weight_decay: float = 0.0  # embedding tables (ids, categorical and dense feature projections)
    net_weight_decay: float = 0.0  # every other weight: MLP, cross, attention layers, the global offset
    bias_weight_decay: float = 0.0  # first-order terms (per-user, item, feature-value biases) a model marks first_order
    optimizer: str = "adamw"  # adam (L2 in the gradient) | adamw (decoupled)
    scheduler: str = "none"  # none | onecycle
    loss: str = "auto"  # auto (mse for rating, bce for implicit) | mse | bce | bpr | sampled_softmax | softmax (implicit, mf)
    num_negatives: int = 4
    seed: int = 42
    threads: int = 1  # torch intra-op threads; 0 = torch's default (see README: 2 threads can thrash)
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1  # machines in a multi-node launch (see README, Scaling out)


CHOICES = {"optimizer": ("adam", "adamw"), "scheduler": ("none", "onecycle"), "loss": ("auto", "mse", "bce", "bpr", "sampled_softmax", "softmax")}
POSITIVE = {"num_nodes", "lr", "epochs", "batch_size", "num_negatives", "embedding_dim", "mf_dim", "mlp_dim", "num_heads",
            "num_layers", "cross_layers"}
NON_NEGATIVE = {"weight_decay", "net_weight_decay", "bias_weight_decay", "min_epochs", "patience", "threads", "damping", "init_std"}


def model_fields(name: str) -> dict[str, object]:
    """Constructor keywords of a model (after n_users, n_items) with their defaults."""
    sig = inspect.signature(MODELS[name].__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k not in ("self", "n_users", "n_items") and p.kind is p.POSITIONAL_OR_KEYWORD}


def _check_type(key: str, value, default, where: str):
    if isinstance(default, str):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, str) and not isinstance(default, str):
        try:
            float(value)
            hint = f"; YAML reads {value!r} as a string, write it as a plain decimal (e.g. 0.001)"
        except ValueError:
            hint = ""
        kind = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(type(default).__name__,
                                                                                    f"a {type(default).__name__}")
        raise RecsysError(f"{where}: {key}={value!r} must be {kind}{hint}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RecsysError(f"{where}: {key}={value!r} must be true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise RecsysError(f"{where}: {key}={value!r} must be an integer")
        value = int(value)
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecsysError(f"{where}: {key}={value!r} must be a number")
        value = float(value)
    elif isinstance(default, (list, tuple)):  # layer widths; empty only where the default is (an optional tower)
        if (not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                           for v in value) or (not value and default)):
            what = "a list" if not default else "a non-empty list"
            raise RecsysError(f"{where}: {key}={value!r} must be {what} of positive integers, e.g. [64, 32]")
        value = list(value)
    return value


def _check_range(key: str, value, where: str):
    if key in CHOICES and value not in CHOICES[key]:
        raise RecsysError(f"{where}: {key}={value!r} is not one of {', '.join(CHOICES[key])}")
    if key in POSITIVE and value <= 0:
        raise RecsysError(f"{where}: {key}={value} must be > 0")
    if key in NON_NEGATIVE and value < 0:
        raise RecsysError(f"{where}: {key}={value} must be >= 0")
    if key in ("dropout", "deep_dropout") and not 0 <= value < 1:
        raise RecsysError(f"{where}: {key}={value} must be in [0, 1)")


def parse_override(text: str):
    """A -P value as YAML would read it, so `layers=[64,32]` and `include_bias=false` work."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load(name: str, path: str | Path | None = None, overrides: dict | None = None,
         task: str = "rating") -> tuple[dict, TrainConfig]:
    """-> (model hyper-parameters, TrainConfig), validated; overrides win over the task section,
    which wins over the file's base sections."""
    check_name(name)
    path = Path(path) if path else CONFIG_DIR / f"{name}.yaml"
    if not path.exists():
        raise RecsysError(f"config {path.name} does not exist; pass config=<path to a YAML like configs/{name}.yaml>")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecsysError(f"{path.name} is not valid YAML ({str(e).splitlines()[0]})") from None
    where = path.name
    if not isinstance(doc, dict) or not {"model", "training"} <= set(doc) <= {"model", "training", "implicit", "search"}:
        raise RecsysError(f"{where} must have the sections model: and training: (and optionally implicit:, search:), "
                          f"has {sorted(doc) if isinstance(doc, dict) else doc!r}")
    model_doc, train_doc = dict(doc["model"] or {}), dict(doc["training"] or {})
    task_doc = dict(doc.get("implicit") or {})
    mdefaults = {k: v for k, v in model_fields(name).items() if k not in FEATURE_KWARGS}
    tdefaults = asdict(TrainConfig())
    for section, given, defaults in (("model", model_doc, mdefaults), ("training", train_doc, tdefaults)):
        unknown = set(given) - set(defaults)
        if unknown:
            raise RecsysError(f"{where}: unknown {section} key(s) {sorted(unknown)}; valid: {', '.join(defaults)}")
        missing = set(defaults) - set(given)
        if missing:
            raise RecsysError(f"{where}: missing {section} key(s) {sorted(missing)}; every key must be set")
    bad = set(task_doc) - set(mdefaults) - set(tdefaults)
    if bad:
        raise RecsysError(f"{where}: unknown implicit key(s) {sorted(bad)}; valid: {', '.join([*mdefaults, *tdefaults])}")
    layered = {**(task_doc if task == "implicit" else {}), **(overrides or {})}
    for key, raw in layered.items():
        value = parse_override(raw) if isinstance(raw, str) else raw
        if key in mdefaults:
            model_doc[key] = value
        elif key in tdefaults:
            train_doc[key] = value
        else:
            raise RecsysError(f"unknown parameter {key!r} for model {name}; valid: {', '.join([*mdefaults, *tdefaults])}")
    for given, defaults in ((model_doc, mdefaults), (train_doc, tdefaults)):
        for key in given:
            given[key] = _check_type(key, given[key], defaults[key], where)
            _check_range(key, given[key], where)
    return model_doc, TrainConfig(**train_doc)


SEARCH_TYPES = {"float", "int", "categorical"}


TASKS = ("rating", "implicit")
TASK_LOSSES = {"rating": ("auto", "mse"), "implicit": ("auto", "mse", "bce", "bpr", "sampled_softmax", "softmax")}


def search_space(name: str, path: str | Path | None = None, task: str = "rating") -> dict[str, dict]:
    """The `search:` space of a model's config for a task, validated: key -> {type: float|int, low,
    high, log} or {type: categorical, choices: [...]}; every key a field of the model or of training.

    `search:` is either one space for both tasks, or `rating:` and/or `implicit:` sub-sections
    (a loss is only worth searching for implicit data, where bce, bpr and softmax compete)."""
    if task not in TASKS:
        raise RecsysError(f"task={task!r} is not one of {', '.join(TASKS)}")
    path = Path(path) if path else CONFIG_DIR / f"{name}.yaml"
    load(name, path)  # the file itself is valid
    doc = yaml.safe_load(path.read_text()) or {}
    space = doc.get("search") or {}
    if isinstance(space, dict) and set(space) & set(TASKS):
        if set(space) - set(TASKS):
            raise RecsysError(f"{path.name}: search: has per-task sections ({', '.join(TASKS)}) mixed with keys "
                              f"{sorted(set(space) - set(TASKS))}; put every key under a task")
        space, where_task = space.get(task) or {}, f".{task}"
    else:
        where_task = ""
    if not space:
        raise RecsysError(f"{path.name} has no search{where_task or ''}: space for task={task}; model {name} has "
                          "nothing to tune there (add one, e.g. lr: {type: float, low: 0.0001, high: 0.1, log: true})")
    if not isinstance(space, dict):
        raise RecsysError(f"{path.name}: search{where_task} must map keys to specs, got {space!r}")
    valid = {**{k: v for k, v in model_fields(name).items() if k not in FEATURE_KWARGS}, **asdict(TrainConfig())}
    for key, spec in space.items():
        where = f"{path.name}: search{where_task}.{key}"
        if key not in valid:
            raise RecsysError(f"{where} is not a field of model {name} or of training")
        if not isinstance(spec, dict) or spec.get("type") not in SEARCH_TYPES:
            raise RecsysError(f"{where} needs type: float, int or categorical")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise RecsysError(f"{where} needs a non-empty choices: list")
            for choice in spec["choices"]:  # each choice must be a value train would accept
                _check_range(key, _check_type(key, choice, valid[key], where), where)
            if key == "loss":
                wrong = [c for c in spec["choices"] if c not in TASK_LOSSES[task]]
                if wrong:
                    raise RecsysError(f"{where}: loss {wrong} cannot train task={task} (valid: "
                                      f"{', '.join(TASK_LOSSES[task])}); search the loss under search.implicit")
                if "softmax" in spec["choices"] and not hasattr(MODELS[name], "score_matrix"):
                    raise RecsysError(f"{where}: softmax scores the whole catalogue and needs a dot-product model "
                                      f"(mf); {name} has no score_matrix")
        else:
            lo, hi = spec.get("low"), spec.get("high")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) or not lo < hi:
                raise RecsysError(f"{where} needs numbers low < high (YAML reads 1e-3 as a string: write 0.001)")
            if spec.get("log") and lo <= 0:
                raise RecsysError(f"{where} is log-uniform and needs low > 0")
    return space


def check_search(name: str, path: str | Path | None, task: str = "") -> None:
    """Fail early when no task (or not the given one) has a valid search space."""
    errors = []
    for t in [task] if task else TASKS:
        try:
            search_space(name, path, t)
            return
        except RecsysError as e:
            errors.append(e)
    raise errors[0]


def flat(model_hp: dict, train: TrainConfig) -> dict:
    return {**{f"model.{k}": v for k, v in model_hp.items()}, **{f"training.{f.name}": getattr(train, f.name) for f in fields(train)}}
