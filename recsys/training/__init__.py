"""Training: batches (batches.py), losses by name (losses.py), the LightningModule (module.py),
`fit` (fit.py) and the multi-process hand-off (distributed.py)."""

from recsys.training.distributed import hand_off, handed_off, worker_rank
from recsys.training.fit import FitResult, check_more_epochs, check_trainer, fit, seed_everything
from recsys.training.module import Recommender, decay_groups, load_module

__all__ = ["FitResult", "Recommender", "check_more_epochs", "check_trainer", "decay_groups", "fit", "hand_off", "handed_off",
           "load_module", "seed_everything", "worker_rank"]
