"""Training: batches (batches.py), losses by name (losses.py), the LightningModule (module.py),
`fit` (fit.py), the checks a train run passes first (checks.py) and the multi-process hand-off (distributed.py)."""

from recsys.training.distributed import hand_off, handed_off, worker_spec
from recsys.training.checks import check_more_epochs, check_request, check_trainer
from recsys.training.fit import FitResult, fit, fit_worker, seed_everything
from recsys.training.module import TrainingModule, decay_groups

__all__ = ["FitResult", "TrainingModule", "check_more_epochs", "check_request", "check_trainer", "decay_groups", "fit", "fit_worker", "hand_off", "handed_off",
           "seed_everything", "worker_spec"]
