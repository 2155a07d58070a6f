"""What a train run asks, checked before its first param is logged (steps/train.py, tune's trials): the
runtime Lightning must accept, the loss that must fit the task and model, and a resume that must have
epochs left to train."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from recsys import config, scoring
from recsys.config import TrainConfig
from recsys.errors import RecsysError
from recsys.models import model_class
from recsys.training.distributed import devices


def check_trainer(cfg: TrainConfig) -> None:
    """Build (and discard) a Trainer with the run's accelerator / devices / strategy, so a setting
    Lightning would reject fails as one line before anything is logged."""
    rt = cfg.runtime
    try:
        pl.Trainer(accelerator=rt.accelerator, devices=devices(rt.devices), strategy=rt.strategy,
                   num_nodes=rt.num_nodes, precision=rt.precision, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecsysError(f"accelerator={rt.accelerator!r}, devices={rt.devices!r}, strategy={rt.strategy!r}: "
                          f"{msg[:300]}") from None


def check_request(model_name: str, cfg: TrainConfig, task: str, n_items: int, val_users: int = 0,
                  resume: Path | None = None, resume_from: str = "") -> None:
    """Everything a train run asks, checked before its first param is logged: the sampled validation
    applies to ranking, the loss fits the task and model, Lightning takes the runtime, and a resume
    has epochs left."""
    if val_users and task != "implicit":
        raise RecsysError("eval_users samples the users to rank and applies to the implicit task; leave it at 0")
    config.resolve_loss(cfg.loss, task, model_class(model_name), n_items)
    check_trainer(cfg)
    if resume is not None:
        check_more_epochs(resume, cfg.epochs, resume_from)


def check_more_epochs(checkpoint: Path, epochs: int, run_id: str) -> None:
    """A resume must have epochs left: a last.ckpt is written after each epoch's validation."""
    ck = scoring.safe_load(checkpoint)
    done = int(ck.get("epoch", -1)) + 1
    hp, steps = ck.get("hyper_parameters", {}), int(ck.get("global_step", 0))
    # a one-cycle schedule is laid over the epochs it was planned for: its learning rate reaches 0 there
    planned = round(hp["total_steps"] * done / steps) if hp.get("scheduler") == "onecycle" and steps and done else None
    if planned is not None and done >= planned:
        raise RecsysError(f"run {run_id} finished its one-cycle schedule ({planned} epochs); a one-cycle run cannot "
                          f"train past it: start a new run with epochs={max(epochs, planned + 1)}")
    if epochs <= done:
        raise RecsysError(f"run {run_id} already trained {done} epochs; pass epochs > {done} to train on from its "
                          "last checkpoint")
    if planned is not None and epochs > planned:
        raise RecsysError(f"run {run_id} trains with a one-cycle schedule laid over {planned} epochs (its learning "
                          f"rate reaches 0 there), so it cannot train past them; resume with epochs={planned} "
                          f"at most, or start a new run with epochs={epochs}")
