"""Hyper-parameter search with Optuna: a TPE sampler seeded per trial, a median pruner on the per-epoch
validation metric, and studies in an RDB storage that several processes (or machines) share.

Nothing here talks to MLflow; `steps/tune.py` logs each trial as a nested run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytorch_lightning as pl
import yaml

from recsys import config
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


def open_study(storage: str, name: str, model: str, task: str, data_hash: str, seed: int, direction: str,
               space: dict | None = None, repeats: int = 1):
    """Create the study or join it (resume, or another worker); refuse one made for something else
    (another model, task, data or search space: Optuna cannot mix trials drawn from different spaces;
    or another number of training seeds per trial: their values are not comparable)."""
    import time

    for attempt in range(6):  # workers starting at once race to create a fresh storage's tables: retry
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True,
                                        sampler=TrialSeededTPE(seed),
                                        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2))
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
    becomes the log range's low end; loss auto is bce for implicit data), or None when a categorical
    default is not among the choices."""
    out = {}
    for key, spec in space.items():
        value = hp[key] if key in hp else getattr(cfg, key)
        if key == "loss" and value == "auto":
            value = TASKS[task].loss
        if spec["type"] == "categorical":
            if value not in spec["choices"]:
                return None
        else:
            value = min(max(value, spec["low"]), spec["high"])
            value = int(round(value)) if spec["type"] == "int" else float(value)
        out[key] = value
    return out


def mean_and_sd(scores: list[float]) -> tuple[float, float]:
    """A trial's objective over its training seeds: the mean, and the sd (ddof=1; 0 for one seed)."""
    return float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0


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


class Pruning(pl.Callback):
    """Reports the validation metric each epoch; stops a trial the median pruner gives up on.

    A one-cycle trial (`prunable=False`) is judged on its finished curve only and reports nothing per
    epoch: its learning rate peaks mid-run, so its middle epochs look worse than a constant-rate trial's
    at the same epoch and a median rule would cut exactly the runs that end best."""

    def __init__(self, trial: optuna.Trial, monitor: str, prunable: bool = True):
        self.trial, self.monitor, self.prunable = trial, monitor, prunable

    def on_validation_epoch_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking or not self.prunable:
            return
        self.trial.report(float(value), trainer.current_epoch)
        if self.trial.should_prune() and not self.trial.user_attrs.get("defaults"):
            raise optuna.TrialPruned(f"epoch {trainer.current_epoch + 1}: {self.monitor}={float(value):.4f}")


def finished(study) -> list:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def abandon(study, trials: list) -> None:
    """Mark trials cut short by an interrupt FAIL, so a resumed or parallel sweep does not wait on them."""
    for t in trials:
        try:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError):
            pass  # already finished


def sweep(study, objective, n: int, timeout: float | None, signals) -> int:
    """Run trials until the study holds `n` finished ones, whoever ran them; returns how many this worker ran
    (`signals.signum`, set by recsys.interrupts.Sweep, stops it between trials).

    Optuna's own `optimize` checks the count after a trial, so two workers each starting one when the
    study is one short leave n + 1. Here a worker claims a trial before running it: after `ask` (which
    numbers trials in the storage), the trial runs only if fewer than `n` trials numbered before it are
    finished or running; otherwise it is a surplus, told FAIL with the `surplus` attribute (it never ran)
    and the worker stops. An enqueued trial (the shipped defaults) is asked like any other; a second copy
    of it (two workers enqueued it at the same moment) is told FAIL with the `duplicate` attribute."""
    import time

    live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    t0, ran = time.monotonic(), 0
    while not signals.signum and (timeout is None or time.monotonic() - t0 < timeout):
        if len(study.get_trials(deepcopy=False, states=live)) >= n:
            break
        trial = study.ask()
        if trial.user_attrs.get("defaults") and any(  # two workers enqueued the defaults at once: run them once
                t.user_attrs.get("defaults") and t.number < trial.number for t in study.get_trials(
                    deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                            optuna.trial.TrialState.WAITING))):
            trial.set_user_attr("duplicate", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        ahead = [t for t in study.get_trials(deepcopy=False, states=live) if t.number < trial.number]
        if len(ahead) >= n:
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except BaseException:
            abandon(study, [trial])
            raise
        else:
            study.tell(trial, value)
        ran += 1
    return ran


def settle(study, n: int, patience: float | None = None, poll: float = 2.0) -> int:
    """Wait for trials other workers are still running (those within the study's `n`), so every worker's
    summary reads the same finished study. Waits at most `patience` seconds (default: three times the
    longest finished trial, at least a minute: a worker killed without a word leaves its trial RUNNING);
    returns how many are still running after that."""
    import time

    def running():
        mine = [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.FAIL]
        return [t for t in sorted(mine, key=lambda t: t.number)[:n] if t.state == optuna.trial.TrialState.RUNNING]

    if patience is None:
        spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished(study)
                 if t.datetime_complete and t.datetime_start]
        patience = max(60.0, 3 * max(spans, default=0.0))
    deadline = time.monotonic() + patience
    while (left := running()) and time.monotonic() < deadline:
        time.sleep(poll)
    return len(left)


def best_config(name: str, path: Path, params: dict, task: str) -> str:
    """The model's config with the best values in place: a file `train -P config=` accepts.
    A rating sweep writes the base sections; an implicit sweep writes the `implicit:` overrides, so
    one task's tuning never moves the other's defaults."""
    doc = yaml.safe_load(Path(path).read_text())
    for key, value in params.items():
        if task == "implicit":
            doc["implicit"] = {**(doc.get("implicit") or {}), key: value}
        else:
            section = "model" if key in config.model_schema(name).model_fields else "training"
            doc[section] = {**(doc.get(section) or {}), key: value}
    header = (f"# {name}: best trial of a {task} tune sweep (values replace the defaults; search: kept for the "
              "next sweep)\n")
    return header + yaml.safe_dump(doc, sort_keys=False)


def plots(study, folder: Path) -> list[Path]:
    """Optimisation history and parameter importances (when there are enough finished trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    import warnings

    out = []
    for name, fn in (("optimization_history.png", ovm.plot_optimization_history),
                     ("param_importances.png", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore")
                ax = fn(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # too few complete trials for importances
        fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
        fig.set_size_inches(8, 4.5)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        out.append(folder / name)
    return out
