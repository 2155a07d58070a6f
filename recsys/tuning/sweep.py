"""Running a study's trials: pruning on the per-epoch validation metric, claiming a trial before running it
(several workers never run more than the study's `n`), and waiting for the trials other workers run."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import optuna
import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from recsys import interrupts
from recsys.errors import Interrupted


def fit_seeds(data, model: str, hp: dict, cfg, repeats: int, folder: Path, logger=None,
              callbacks: tuple = (), later: tuple = ()) -> tuple[list[float], float]:
    """A trial's training over the seeds cfg.seed, cfg.seed + 1, ...: the first with `logger` and
    `callbacks` (its curve is logged and pruned), the others with `later` only (the budget's deadline).
    The best validation scores, and the seconds of training."""
    from recsys import training

    scores, seconds = [], 0.0
    for r in range(repeats):
        try:
            result = training.fit(data, model, hp, cfg.model_copy(update={"seed": cfg.seed + r}),
                                  logger if r == 0 else None, folder / f"seed{r}",
                                  callbacks=callbacks if r == 0 else later)
        except SIGTERMException:  # Lightning's own word for the SIGTERM the sweep defers to a safe point
            raise Interrupted(signal.SIGTERM) from None
        scores.append(result.best_score)
        seconds += result.seconds
    return scores, seconds


def mean_and_sd(scores: list[float]) -> tuple[float, float]:
    """A trial's objective over its training seeds: the mean, and the sd (ddof=1; 0 for one seed)."""
    return float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0


class Pruning(pl.Callback):
    """Reports the validation metric each epoch; stops a trial the study's pruner gives up on, and any
    trial, whichever seed it is training, still running at the sweep's `deadline` (time.monotonic(), the
    one clock of the budget, `sweep`'s too): a budget is a wall-clock promise, not only a rule for
    starting trials. The shipped defaults' trial, the reference, is never pruned by the pruner, but the
    budget holds for it too.

    A one-cycle trial (`prunable=False`) is judged on its finished curve only and reports nothing per
    epoch: its learning rate peaks mid-run, so its middle epochs look worse than a constant-rate trial's
    at the same epoch and a median rule would cut exactly the runs that end best."""

    def __init__(self, trial: optuna.Trial, monitor: str, prunable: bool = True, deadline: float | None = None):
        self.trial, self.monitor, self.prunable, self.deadline = trial, monitor, prunable, deadline

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        interrupts.safe_point()  # a signal during the trial stops it here, outside any store write

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        interrupts.safe_point()

    def deadline_only(self) -> "Pruning":
        """The same budget for a trial's later seeds (their epochs are not reported: one curve a trial)."""
        return Pruning(self.trial, self.monitor, prunable=False, deadline=self.deadline)

    def on_validation_end(self, trainer, pl_module):
        # not on_validation_epoch_end: Lightning calls callbacks' before the module's, which logs this
        # epoch's metric, so a callback there reads the previous epoch's value
        if trainer.sanity_checking:
            return
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise optuna.TrialPruned(f"the budget ran out at epoch {trainer.current_epoch + 1}")
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        if not self.prunable:
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


def sweep(study, objective, n: int, deadline: float | None, signals) -> int:
    """Run trials until the study holds `n` finished ones, whoever ran them, or until `deadline`
    (time.monotonic(); the trials' Pruning reads the same one); returns how many this worker ran
    (`signals.signum`, set by recsys.interrupts.Sweep, stops it between trials).

    Optuna's own `optimize` checks the count after a trial, so two workers each starting one when the
    study is one short leave n + 1. Here a worker claims a trial before running it: after `ask` (which
    numbers trials in the storage), the trial runs only if fewer than `n` trials numbered before it are
    finished or running; otherwise it is a surplus, told FAIL with the `surplus` attribute (it never ran)
    and the worker stops. An enqueued trial (the shipped defaults) is asked like any other; a second copy
    of it (two workers enqueued it at the same moment) is told FAIL with the `duplicate` attribute."""
    live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    ran = 0
    while not signals.signum and (deadline is None or time.monotonic() < deadline):
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
