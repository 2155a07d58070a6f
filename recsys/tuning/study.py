"""An Optuna study shared by every worker: its storage, a sampler seeded per trial, the study itself (refusing
one made for something else), the shipped defaults as a trial, and drawing a trial's values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna

from recsys.errors import RecsysError
from recsys.schema import TASKS

# ERROR: a trial that fails logs a WARNING with its traceback; the step reports the error as one line
optuna.logging.set_verbosity(optuna.logging.ERROR)
STORAGE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://", "mysql://", "mysql+pymysql://")


def storage_url(given: str, tracking_uri: str) -> str:
    """`given`, checked; by default a SQLite file beside an SQLite tracking store (its own database:
    Optuna and MLflow both keep an `alembic_version` table)."""
    if given:
        if not given.startswith(STORAGE_SCHEMES):
            raise RecsysError(f"storage={given!r} is not a database URL Optuna can share; use one of "
                              f"{', '.join(s + '...' for s in STORAGE_SCHEMES)}")
        return given
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).with_name('optuna.db')}"
    return "sqlite:///optuna.db"


def space_hash(space: dict) -> str:
    """A short fingerprint of a search space (part of the default study name, and recorded on the study)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(space, sort_keys=True, default=str).encode()).hexdigest()[:8]


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose random draws for trial n are seeded by (seed, n), not by one stream per process.

    A `TPESampler(seed=...)` per process makes every worker of a shared study draw the same startup
    points (two processes, one seed: trials 1 and 2 identical). Optuna numbers trials in the storage, so
    (seed, number) is distinct across simultaneous workers and still reproducible for a lone one; a
    resumed sweep draws what an uninterrupted one would have. `constant_liar` makes TPE treat trials
    still running elsewhere as bad, so workers also spread out after the startup trials."""

    def __init__(self, seed: int):
        self.seed = seed
        self._per_trial: dict[int, optuna.samplers.TPESampler] = {}

    def _for(self, trial) -> optuna.samplers.TPESampler:
        if trial.number not in self._per_trial:
            seed = int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0])
            self._per_trial[trial.number] = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        return self._per_trial[trial.number]

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._per_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:  # Optuna calls this for n_jobs > 1; the seeds are per trial already
        pass


PRUNERS = {  # per worker (Optuna keeps a pruner with the study object, not in the storage)
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    # successive halving in brackets over epochs (Li et al., JMLR 2018): rungs at 1, 3, 9... epochs
    "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3),
    "none": lambda: optuna.pruners.NopPruner(),
}


def open_study(storage: str, name: str, model: str, task: str, data_hash: str, seed: int, direction: str,
               space: dict | None = None, repeats: int = 1, pruner: str = "median"):
    """Create the study or join it (resume, or another worker); refuse one made for something else
    (another model, task, data or search space: Optuna cannot mix trials drawn from different spaces;
    or another number of training seeds per trial: their values are not comparable)."""
    import time

    for attempt in range(6):  # workers starting at once race to create a fresh storage's tables: retry
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True,
                                        sampler=TrialSeededTPE(seed),
                                        pruner=PRUNERS[pruner]())
            break
        except Exception as e:
            if attempt == 5:
                raise RecsysError(f"storage {storage!r} could not be opened ({str(e).splitlines()[0][:200]})") from None
            time.sleep(0.5 * (attempt + 1))
    want = {"model": model, "task": task, "data": data_hash, "repeats": repeats}
    if space is not None:
        want["space"] = space_hash(space)
    have = study.user_attrs
    shared = [k for k in want if k in have]  # a study from before spaces were recorded lacks "space"
    if have and {k: have[k] for k in shared} != {k: want[k] for k in shared}:
        differ = [k for k in shared if have[k] != want[k]]
        what = ("search space" if differ == ["space"] else "repeats" if differ == ["repeats"]
                else "model, task and data")
        raise RecsysError(f"study {name!r} in {storage} was created for {have}, not {want}; pick another study "
                          f"name (or leave study=auto) or the same {what}")
    for k, v in want.items():
        study.set_user_attr(k, v)
    return study


def defaults_in_space(space: dict[str, dict], hp: dict, cfg, task: str) -> dict | None:
    """The shipped config's values for the searched keys, clipped into the space (a weight decay of 0
    becomes the log range's low end; loss auto is the task's loss where the space does not offer auto
    itself: for sasrec and gru4rec auto is the recipe's choice, training/recipe.py), or None when a
    categorical default is not among the choices."""
    out = {}
    for key, spec in space.items():
        value = hp[key] if key in hp else getattr(cfg, key)
        if key == "loss" and value == "auto" and "auto" not in spec.get("choices", ()):
            value = TASKS[task].loss
        if spec["type"] == "categorical":
            if value not in spec["choices"]:
                return None
        else:
            value = min(max(value, spec["low"]), spec["high"])
            value = int(round(value)) if spec["type"] == "int" else float(value)
        out[key] = value
    return out


def enqueue_defaults(study, params: dict | None) -> bool:
    """Make the shipped defaults a trial of the study (once; again only if an earlier one was pruned or
    cut short): the sweep's best is then never worse on validation than what it would replace. The
    defaults trial is never pruned (`Pruning`), so a slow starter is judged on its finished curve."""
    if params is None:
        return False
    live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    for t in study.get_trials(deepcopy=False, states=live):
        if t.params == params or t.system_attrs.get("fixed_params") == params:
            return False
    study.enqueue_trial(params, user_attrs={"defaults": True})
    return True


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict:
    out = {}
    for key, spec in space.items():
        try:
            if spec["type"] == "categorical":
                out[key] = trial.suggest_categorical(key, spec["choices"])
            elif spec["type"] == "int":
                out[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
            else:
                out[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
        except ValueError as e:  # a study from before spaces were recorded, whose trials drew `key` otherwise
            raise RecsysError(f"study {trial.study.study_name!r} drew {key} from another search space "
                              f"({str(e).splitlines()[0][:120]}); pick another study name or leave study=auto") from None
    return out
