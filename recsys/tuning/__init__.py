"""Hyper-parameter search with Optuna: a TPE sampler seeded per trial, a median (or Hyperband) pruner on
the per-epoch validation metric, a wall-clock budget that cuts the trial running at its end, and studies in an RDB storage that several processes (or machines) share.

- study:  storage, sampler, the study, the defaults trial, suggesting values
- sweep:  pruning, the claim-a-trial loop, waiting on other workers
- output: the best config file, plots

Nothing here talks to MLflow; `steps/tune.py` logs each trial as a nested run (and its signals are
recsys/interrupts.py's `Sweep`).
"""

from recsys.tuning.output import best_config, plots
from recsys.tuning.study import (PRUNERS, STORAGE_SCHEMES, TrialSeededTPE, defaults_in_space, enqueue_defaults, open_study,
                                 space_hash, storage_url, suggest)
from recsys.tuning.sweep import Pruning, abandon, finished, fit_seeds, mean_and_sd, settle, sweep

__all__ = ["PRUNERS", "STORAGE_SCHEMES", "Pruning", "TrialSeededTPE", "abandon", "best_config", "defaults_in_space",
           "enqueue_defaults", "finished", "fit_seeds", "mean_and_sd", "open_study", "plots", "settle", "space_hash", "storage_url",
           "suggest", "sweep"]
