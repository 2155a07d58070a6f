"""Strict configs, composed in layers (RecBole's overall < model < command line; lightning-hydra-template's
`defaults` where a variant file holds only what differs):

    configs/defaults.yaml   training: and runtime: for every model, each key commented once
    configs/<model>.yaml    model: (its constructor's keywords), what its training: changes, and
                            optionally implicit: (keys of any section for task=implicit), large:
                            (implicit, over LARGE_CATALOGUE items, over implicit:), large_rating:
                            (task=rating over LARGE_CATALOGUE items) and search:
    -P key=value            overrides, named by field

Validation is pydantic's (`extra="forbid"`, no infinities or NaN), reported as one line with the fix:
an unknown key names the closest valid one. Runtime settings (threads, devices, strategy...) are not
hyper-parameters: they have their own section and their own `runtime.*` params.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

# the fields a config may hold and their rules, named here for every caller (config.Training, ...)
from recsys.config_fields import Runtime, TrainConfig, Training, model_schema, valid_keys
from recsys.errors import RecsysError
from recsys.models import MODEL_NAMES, check_model_name, model_class
from recsys.schema import LARGE_CATALOGUE, LOSS_NAMES, SEQUENCE_LOSS_NAMES, TASKS, task_of

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULTS = CONFIG_DIR / "defaults.yaml"
SECTIONS = ("model", "training", "runtime")
def _one_line(e: ValidationError, where: str, valid: list[str]) -> RecsysError:
    err = e.errors()[0]
    key = ".".join(str(x) for x in err["loc"])
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(valid)}"
        return RecsysError(f"{where}: unknown key {key!r}{hint}")
    if err["type"] == "missing":
        return RecsysError(f"{where}: {key} is missing")
    msg = err["msg"][0].lower() + err["msg"][1:]
    if err["type"] == "value_error":
        msg = msg.removeprefix("value error, ")
    if err["type"] == "literal_error":
        msg = "is not one of " + err["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
    return RecsysError(f"{where}: {key}={err['input']!r}: {msg}")


def parse_override(text: str):
    """A -P value as YAML would read it, so `layers=[64,32]` and `include_bias=false` work."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _read(path: Path, what: str) -> dict:
    if not path.is_file():
        raise RecsysError(f"config {path} does not exist or is not a file; pass config=<a YAML like {what}>")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RecsysError(f"{path.name} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise RecsysError(f"{path.name} must be a mapping of sections, got {type(doc).__name__}")
    return doc


def read_document(path: str | Path) -> dict:
    """A config file's sections as written (a run's logged config.yaml: model, training, runtime)."""
    return _read(Path(path), "configs/mf.yaml")


def config_path(name: str, path: str | Path | None = None) -> Path:
    check_model_name(name)
    return Path(path) if path else CONFIG_DIR / f"{name}.yaml"


OVERLAYS = ("implicit", "large", "large_rating")


def _layers(name: str, path: str | Path | None) -> tuple[dict, dict, Path]:
    """(the composed sections, the model file's overlays by name, the model file's path)"""
    path = config_path(name, path)
    doc = _read(path, f"configs/{name}.yaml")
    allowed = {*SECTIONS, *OVERLAYS, "search"}
    if set(doc) - allowed:
        bad = sorted(set(doc) - allowed)[0]
        close = difflib.get_close_matches(str(bad), sorted(allowed), n=1)
        raise RecsysError(f"{path.name}: unknown section {bad!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                                   f"; sections: {', '.join(sorted(allowed))}"))
    for s in (*SECTIONS, *OVERLAYS):
        if not isinstance(doc.get(s) or {}, dict):
            raise RecsysError(f"{path.name}: {s}: must map keys to values, e.g. {s}: {{lr: 0.001}}")
    base = _read(DEFAULTS, "configs/defaults.yaml")
    out = {s: {**(base.get(s) or {}), **(doc.get(s) or {})} for s in SECTIONS}
    # a model file's large: / large_rating: extend the defaults' (the shared large-data schedule, written once)
    return out, {o: {**((base.get(o) or {}) if o in doc else {}), **(doc.get(o) or {})} for o in OVERLAYS}, path


def _owner(key: str, name: str) -> str | None:
    for section, schema in (("model", model_schema(name)), ("training", Training), ("runtime", Runtime)):
        if key in schema.model_fields:
            return section
    return None


def available_bytes() -> int | None:
    """The memory the machine has available now (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def load(name: str, path: str | Path | None = None, overrides: dict | None = None,
         task: str = "rating", n_items: int = 0) -> tuple[dict, TrainConfig]:
    """-> (model hyper-parameters, TrainConfig), validated; overrides win over the large overlay
    (more than LARGE_CATALOGUE items: large: for task=implicit, large_rating: for ratings), which wins
    over the task overlay, which wins over the model's file, which wins over configs/defaults.yaml."""
    sections, overlays, path = _layers(name, path)
    where = path.name
    keys = valid_keys(name)
    # every key is checked, the overlay's whichever task loads the file; then the layers apply in order
    for what, values in (*((f"{{where}}: unknown {o} key {{key!r}}", overlays[o]) for o in OVERLAYS),
                         ("unknown parameter {key!r} for model {name}", overrides or {})):
        for key in values:
            if _owner(key, name) is None:
                close = difflib.get_close_matches(key, keys, n=1)
                raise RecsysError(what.format(where=where, key=key, name=name)
                                  + (f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(keys)}"))
    implicit, large = task == "implicit", n_items > LARGE_CATALOGUE
    applied = [o for o, on in (("implicit", implicit), ("large", implicit and large),
                               ("large_rating", not implicit and large)) if on]
    for key, value in {k: v for o in applied for k, v in overlays[o].items()}.items():
        sections[_owner(key, name)][key] = value
    for key, raw in (overrides or {}).items():  # a -P value as YAML reads it
        sections[_owner(key, name)][key] = parse_override(raw) if isinstance(raw, str) else raw
    try:
        hp = model_schema(name).model_validate(sections["model"]).model_dump()
    except ValidationError as e:
        raise _one_line(e, where, list(model_schema(name).model_fields)) from None
    try:
        cfg = TrainConfig.model_validate({**sections["training"], "runtime": sections["runtime"]})
    except ValidationError as e:
        raise _one_line(e, where, [*Training.model_fields, *Runtime.model_fields]) from None
    if "num_heads" in hp and hp.get("embedding_dim", 0) % hp["num_heads"]:
        raise RecsysError(f"{where}: num_heads={hp['num_heads']} must divide embedding_dim={hp['embedding_dim']} "
                          "(each head attends over embedding_dim / num_heads of it)")
    cores = os.cpu_count() or 1
    if cfg.runtime.threads > cores:  # torch would start them all; libgomp dies past what it can make
        raise RecsysError(f"{where}: threads={cfg.runtime.threads} is more than this machine's {cores} cores; use "
                          f"threads between 1 and {cores} (0: torch's default)")
    cls = model_class(name)
    have = available_bytes()
    if cls.fit_bytes and n_items and have is not None and cls.fit_bytes(n_items) > have:
        raise RecsysError(f"{where}: {name} holds an items x items matrix: {n_items:,} items need about "
                          f"{cls.fit_bytes(n_items) / 2 ** 30:.1f} GiB while fitting and this machine has "
                          f"{have / 2 ** 30:.1f} GiB available; use itemknn (sparse neighbours)")
    if cfg.exclude_seen and not model_class(name).uses_history:
        raise RecsysError(f"{where}: exclude_seen=true leaves a user's earlier items out of a sequence model's "
                          f"training loss (sasrec, gru4rec); set exclude_seen=false for {name}")
    if implicit and n_items and cfg.num_negatives >= n_items and draws_negatives(cfg.loss, task, name, n_items):
        raise RecsysError(f"num_negatives={cfg.num_negatives} must be below the catalogue's {n_items} items "
                          "(negatives are drawn from it)")
    return hp, cfg


def resolve_loss(loss: str, task: str, model_cls, n_items: int = 0) -> str:
    """The loss a run trains with, or a one-line error. auto: mse for ratings, bce for implicit data; for a
    sequence model the full or the sampled softmax, chosen at fit time by the epoch's work
    (training/recipe.py; `softmax` here); mf on a catalogue of over LARGE_CATALOGUE items the sampled
    softmax (its `large:` overlay)."""
    large = n_items > LARGE_CATALOGUE and model_cls.scores_catalogue and not model_cls.closed_form
    if model_cls.implicit_only and task != "implicit":
        raise RecsysError(f"{model_cls.__name__} ranks items from interactions and needs task=implicit data (prepare "
                          "with task=implicit)")
    if model_cls.uses_history:  # auto: decided at fit time from the data's work (training/recipe.py)
        name = "softmax" if loss == "auto" else loss
        if task != "implicit":
            raise RecsysError(f"{model_cls.__name__} predicts the next item and needs task=implicit data "
                              "(prepare with task=implicit, split=leave_last_out)")
        if name not in SEQUENCE_LOSS_NAMES:
            raise RecsysError(f"loss={loss!r} does not train a sequence model; use one of auto (softmax), "
                              f"{', '.join(SEQUENCE_LOSS_NAMES)}")
        return name
    spec = task_of(task)
    name = loss if loss != "auto" else "sampled_softmax" if large and task == "implicit" else spec.loss
    if name not in LOSS_NAMES:
        raise RecsysError(f"loss={loss!r} is not one of auto, {', '.join(LOSS_NAMES)}")
    if name not in spec.losses:
        raise RecsysError(f"loss={name} needs task=implicit data; use loss=auto ({spec.loss}) for {task} data")
    if name == "softmax" and not model_cls.scores_catalogue:
        raise RecsysError("loss=softmax scores the whole catalogue and needs a model that scores it in one product "
                          "(mf); use sampled_softmax (against num_negatives sampled items), bce or bpr")
    return name


def draws_negatives(loss: str, task: str, name: str, n_items: int) -> bool:
    """Whether training draws `num_negatives` items per positive (or per batch) from the catalogue: not
    the full softmax, not a sequence model's bce (one drawn item per position), and not a closed-form
    model (nothing is optimised: global mean, popularity, itemknn, ease)."""
    cls = model_class(name)
    if cls.closed_form or (cls.uses_history and loss == "auto"):  # the recipe draws fewer than the catalogue
        return False
    resolved = resolve_loss(loss, task, cls, n_items)
    return resolved != "softmax" and not (cls.uses_history and resolved == "bce")


def flat(model_hp: dict, train: TrainConfig) -> dict:
    """The resolved config as params: model.*, training.*, runtime.*."""
    d = train.model_dump()
    runtime = d.pop("runtime")
    return {**{f"model.{k}": v for k, v in model_hp.items()}, **{f"training.{k}": v for k, v in d.items()},
            **{f"runtime.{k}": v for k, v in runtime.items()}}


def as_document(model_hp: dict, train: TrainConfig) -> dict:
    """The resolved config in the file format (logged as config.yaml; `train -P config=` reads it)."""
    d = train.model_dump()
    return {"model": model_hp, "runtime": d.pop("runtime"), "training": d}


__all__ = ["MODEL_NAMES", "TASKS", "Runtime", "TrainConfig", "Training", "as_document", "flat", "load", "model_schema",
           "valid_keys"]
