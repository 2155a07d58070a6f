"""The `search:` space of a model's config file (what `tune` samples), validated against what `train`
accepts."""

from __future__ import annotations

from pathlib import Path

from recsys.config import Training, _read, config_path, load, model_schema
from recsys.errors import RecsysError
from recsys.models import model_class
from recsys.schema import LARGE_CATALOGUE, TASKS, task_of


def search_space(name: str, path: str | Path | None = None, task: str = "rating", n_items: int = 0) -> dict[str, dict]:
    """The `search:` space of a model's config for a task, validated: key -> {type: float|int, low,
    high, log} or {type: categorical, choices: [...]}; every key a field of the model or of training.

    `search:` is either one space for both tasks, or `rating:` and/or `implicit:` sub-sections
    (a loss is only worth searching for implicit data, where bce, bpr and softmax compete), and
    optionally `large:`, the implicit space on a catalogue of over LARGE_CATALOGUE items (`n_items`),
    where the large: overlay's training applies."""
    task_of(task)
    path = config_path(name, path)
    load(name, path)  # the file itself is valid
    space = _read(path, f"configs/{name}.yaml").get("search") or {}
    sections = {*TASKS, "large"}
    if isinstance(space, dict) and set(space) & sections:
        if set(space) - sections:
            raise RecsysError(f"{path.name}: search: has per-task sections ({', '.join(sorted(sections))}) mixed with "
                              f"keys {sorted(set(space) - sections)}; put every key under a task")
        large = task == "implicit" and n_items > LARGE_CATALOGUE and space.get("large")
        space, where_task = (space["large"], ".large") if large else (space.get(task) or {}, f".{task}")
    else:
        where_task = ""
    if not space:
        raise RecsysError(f"{path.name} has no search{where_task}: space for task={task}; model {name} has "
                          "nothing to tune there (add one, e.g. lr: {type: float, low: 0.0001, high: 0.1, log: true})")
    if not isinstance(space, dict):
        raise RecsysError(f"{path.name}: search{where_task} must map keys to specs, got {space!r}")
    tunable = [*model_schema(name).model_fields, *Training.model_fields]
    for key, spec in space.items():
        where = f"{path.name}: search{where_task}.{key}"
        if key not in tunable:
            raise RecsysError(f"{where} is not a field of model {name} or of training")
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise RecsysError(f"{where} needs type: float, int or categorical")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise RecsysError(f"{where} needs a non-empty choices: list")
            for choice in spec["choices"]:  # each choice must be a value train would accept
                load(name, path, {key: choice}, task, n_items)
            if key == "loss":
                allowed = ("auto", *TASKS[task].losses)
                wrong = [c for c in spec["choices"] if c not in allowed]
                if wrong:
                    raise RecsysError(f"{where}: loss {wrong} cannot train task={task} (valid: "
                                      f"{', '.join(allowed)}); search the loss under search.implicit")
                if "softmax" in spec["choices"] and not model_class(name).scores_catalogue:
                    raise RecsysError(f"{where}: softmax scores the whole catalogue and needs a dot-product model "
                                      f"(mf); {name} does not score the catalogue")
        else:
            lo, hi = spec.get("low"), spec.get("high")
            try:
                lo, hi = float(lo), float(hi)
            except (TypeError, ValueError):
                raise RecsysError(f"{where} needs numbers low < high") from None
            if not lo < hi:
                raise RecsysError(f"{where} needs numbers low < high")
            if spec.get("log") and lo <= 0:
                raise RecsysError(f"{where} is log-uniform and needs low > 0")
            spec["low"], spec["high"] = (lo, hi) if spec["type"] == "float" else (int(lo), int(hi))
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
