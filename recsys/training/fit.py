"""`fit`: train one model on a prepared dataset with Lightning, early-stopped on validation, and
restore the best checkpoint."""

from __future__ import annotations

import inspect
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from recsys import config, ranking, scoring
from recsys.config import TrainConfig
from recsys.data import features as feats
from recsys.data import history, known
from recsys.data.negatives import sorted_keys
from recsys.data.artifact import Prepared
from recsys.errors import RecsysError
from recsys.models import model_class
from recsys.schema import ITEM, RATING, ROW_UPDATES_MIN_ROWS, TASKS, USER
from recsys.training import losses
from recsys.training import recipe as recipe_
from recsys.training.batches import LISTS, POSITIVES, SequenceBatches, TensorBatches, chunk_size
from recsys.training.distributed import devices
from recsys.training.module import TrainingModule


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pl.seed_everything(seed, workers=True, verbose=False)


class MinEpochsEarlyStopping(EarlyStopping):
    """Early stopping whose patience only starts counting once `min_epochs` epochs are done."""

    def __init__(self, min_epochs: int, **kw):
        super().__init__(**kw)
        self.min_epochs = min_epochs

    def on_validation_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 < self.min_epochs:
            return
        super().on_validation_end(trainer, pl_module)


@dataclass
class FitResult:
    module: TrainingModule
    checkpoint: Path
    seconds: float
    epochs: int
    best_score: float
    monitor: str
    world_size: int = 1
    loss: str = ""
    updates: str = "dense"
    recipe: recipe_.Recipe | None = None  # what a next-item model's data chose (training/recipe.py)


def resolve_updates(updates: str, n_rows: int, world_size: int) -> str:
    """dense | rows (auto: rows once the id tables hold over ROW_UPDATES_MIN_ROWS rows, in one process:
    DDP all-reduces dense gradients)."""
    if updates == "rows" and world_size > 1:
        raise RecsysError(f"updates=rows trains in one process; with {world_size} processes use updates=dense "
                          "(or auto)")
    if updates != "auto":
        return updates
    return "rows" if n_rows > ROW_UPDATES_MIN_ROWS and world_size == 1 else "dense"


def _val_batches(data: Prepared, users: np.ndarray | None = None) -> TensorBatches:
    """Validation rows: ratings, or (implicit) val positives + their stored negatives, fixed so that
    val/loss is comparable across epochs; with `users` (the validation sample), theirs only."""
    va = data.val
    if data.meta["task"] == "implicit":
        if users is not None:
            va = va[va[USER].isin(users)]
        negs = data.negatives[data.negatives[USER].isin(va[USER])]
        vu = np.concatenate([va[USER].to_numpy(), negs[USER].to_numpy()])
        vi = np.concatenate([va[ITEM].to_numpy(), negs[ITEM].to_numpy()])
        vt = np.concatenate([np.ones(len(va)), np.zeros(len(negs))])
    else:
        vu, vi, vt = va[USER].to_numpy(), va[ITEM].to_numpy(), va[RATING].to_numpy()
    return TensorBatches(vu, vi, vt, batch_size=1 << 14, shuffle=False)


OPTIMISATION = ("lr", "weight_decay", "optimizer", "scheduler", "net_weight_decay", "bias_weight_decay")  # TrainConfig's
# keys the LightningModule takes as plain hyper-parameters (saved in every checkpoint)


def _train_batches(data: Prepared, cls, model_hp: dict, cfg: TrainConfig, loss: str):
    """An epoch's batches: next-item windows of each user's train items (sequence models), or the train
    interactions with the negatives the loss draws."""
    tr = data.train
    u, i = tr[USER].to_numpy(np.int64), tr[ITEM].to_numpy(np.int64)
    implicit = data.meta["task"] == "implicit"
    if cls.uses_history:  # in their recorded order
        max_len = int(model_hp.get("max_len", inspect.signature(cls).parameters["max_len"].default))
        seq, nxt, owners = history.windows(tr, max_len)
        return SequenceBatches(
            seq, nxt, owners, batch_size=cfg.batch_size, seed=cfg.seed, n_items=data.n_items,
            popularity=np.bincount(i, minlength=data.n_items),
            shared_negatives=cfg.num_negatives if loss == "sampled_softmax" else 0,
            negatives_per_position=loss == "bce", chunk=chunk_size(cfg.batch_size * max_len, 65536),
            seen=history.seen(tr, max_len) if cfg.exclude_seen else None, trim=cls.pads_inertly)
    shared = losses.shares_negatives(loss, cls)  # mf's sampled softmax: negatives shared by a batch
    kind = POSITIVES if shared else losses.BATCHES[loss]
    return TensorBatches(
        u, i, tr[RATING].to_numpy(np.float32), batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
        n_items=data.n_items, num_negatives=cfg.num_negatives if implicit else 0,
        seen_keys=sorted_keys(u, i, data.n_items) if implicit and not shared else None, kind=kind,
        chunk=chunk_size(cfg.batch_size * (1 + cfg.num_negatives) if kind == LISTS else cfg.batch_size),
        shared_negatives=cfg.num_negatives if shared else 0,
        popularity=np.bincount(i, minlength=data.n_items) if shared else None)


def _trainer(cfg: TrainConfig, monitor: str, mode: str, ckpt_dir: Path, logger, callbacks: tuple, progress: bool,
             n_batches: int):
    """(Trainer, the best-checkpoint callback): best.ckpt by the validation metric, last.ckpt every epoch,
    early stopping after min_epochs."""
    rt = cfg.runtime
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                           enable_version_counter=False)
    # last.ckpt after every epoch, whether or not it improved (Lightning's save_last only writes it when
    # the monitored checkpoint is written, so a run would resume from its best epoch, not its last)
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False)
    stop = MinEpochsEarlyStopping(cfg.min_epochs, monitor=monitor, mode=mode, patience=cfg.patience,
                                  check_on_train_epoch_end=False)
    trainer = pl.Trainer(
        max_epochs=cfg.epochs, accelerator=rt.accelerator, devices=devices(rt.devices), strategy=rt.strategy,
        num_nodes=rt.num_nodes, precision=rt.precision, logger=logger if logger is not None else False,
        callbacks=[ckpt, last, stop, *callbacks], enable_progress_bar=progress, enable_model_summary=False,
        num_sanity_val_steps=0, deterministic=True, log_every_n_steps=max(1, n_batches))
    return trainer, ckpt


def _module(data: Prepared, model_name: str, model_hp: dict, cfg: TrainConfig, loss: str, updates: str,
            n_batches: int, val_users: int) -> tuple[TrainingModule, np.ndarray | None]:
    """The LightningModule, its model given what it reads (feature tables, the history before validation;
    a closed-form model fitted), and its validation ranking context; with the validation user sample."""
    task, tr = data.meta["task"], data.train
    u, i = tr[USER].to_numpy(np.int64), tr[ITEM].to_numpy(np.int64)
    tables = feats.build(data.users, data.items)
    module = TrainingModule(model_name=model_name, n_users=data.n_users, n_items=data.n_items, features=tables.spec(),
                            model_hparams=model_hp, task=task, rating_min=data.meta["rating_min"],
                            rating_max=data.meta["rating_max"], loss=loss, total_steps=cfg.epochs * n_batches,
                            updates=updates, **{k: getattr(cfg, k) for k in OPTIMISATION})
    model = module.model
    if model.uses_features:
        model.set_tables(tables.user_cont, tables.user_cat, tables.item_cont, tables.item_cat)
    if model.closed_form:
        model.fit(torch.as_tensor(u), torch.as_tensor(i), torch.as_tensor(tr[RATING].to_numpy()), task, module.to_logit)
    before_val = known.before(data, "val")
    model.set_known(before_val)  # validation ranks from the train history, as evaluation's does
    if task != "implicit":
        module.rating_answers = before_val.rating_tables()  # validation's cold pairs answered as evaluation's
        return module, None
    va = data.val
    val_user_ids = va[USER].to_numpy(np.int64)
    vcsr = ranking.CSR.build(val_user_ids, va[ITEM].to_numpy(np.int64), data.n_users)
    users = ranking.sample_users(np.unique(val_user_ids), val_users, data.meta.get("seed", 0) or 0)
    # ranked as evaluation ranks validation: the same exclusions, the same cold users by popularity
    module.ranking_context = (users, vcsr.padded(users), before_val.items,
                              before_val.cold(users, model.answers_histories), before_val.ranking_fallback())
    return module, users if val_users else None


def _recipe(data: Prepared, cls, model_hp: dict, cfg: TrainConfig, val_users: int):
    """A next-item model's recipe from its data's work: (the config it trains with, the Recipe)."""
    defaults = inspect.signature(cls).parameters
    hp = {k: model_hp.get(k, p.default) for k, p in defaults.items() if p.default is not inspect.Parameter.empty}
    counts = np.bincount(data.train[USER].to_numpy(np.int64), minlength=data.n_users)
    windows = int((-(-np.maximum(counts - 1, 0) // hp["max_len"])).sum())  # history.windows' count
    chosen = recipe_.choose(cfg.loss, cfg.num_negatives, val_users, cfg.min_epochs, cfg.patience, cfg.epoch_tflop,
                            int(np.maximum(counts - 1, 0).sum()), data.n_items, int(data.val[USER].nunique()),
                            int(hp["embedding_dim"]), -(-windows // cfg.batch_size), cls.position_flops(**hp),
                            int(hp["max_len"]))
    return cfg.model_copy(update={"loss": chosen.loss, "num_negatives": chosen.num_negatives,
                                  "min_epochs": chosen.min_epochs, "patience": chosen.patience}), chosen


def fit(data: Prepared, model_name: str, model_hp: dict, cfg: TrainConfig, logger=None,
        checkpoint_dir: Path | None = None, progress: bool = False, resume_from: Path | None = None,
        epoch_lines: bool = False, callbacks: tuple = (), val_users: int = 0) -> FitResult | None:
    """Train `model_name` on `data` and restore the best checkpoint (by the validation metric).
    Under a multi-process strategy every process calls this; only global rank 0 gets a result.
    `val_users` > 0 (implicit): the per-epoch validation ranking uses a seeded sample of that many users
    (0: the config's val_users).

    `checkpoint_dir` receives best.ckpt and last.ckpt (every epoch: what an interrupted run leaves);
    `resume_from` (a last.ckpt) restores weights, optimizer, scheduler, callbacks and the epoch."""
    seed_everything(cfg.seed)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    task, cls = data.meta["task"], model_class(model_name)
    loss = config.resolve_loss(cfg.loss, task, cls, data.n_items)
    chosen = None
    if cls.uses_history:  # the recipe follows from the work (training/recipe.py)
        cfg, chosen = _recipe(data, cls, model_hp, cfg, val_users or cfg.val_users)
        loss, val_users = chosen.loss, chosen.val_users
        if epoch_lines or progress:
            print(f"{model_name}: {chosen.why}", file=sys.stderr, flush=True)
    if (epoch_lines or progress) and not cls.closed_form and cfg.min_epochs > cfg.epochs:
        print(f"{model_name}: epochs={cfg.epochs} is below min_epochs={cfg.min_epochs}, so early stopping never acts: "
              f"all {cfg.epochs} epochs run (a shortened schedule: its scores are not the config's)",
              file=sys.stderr, flush=True)
    train_batches = _train_batches(data, cls, model_hp, cfg, loss)
    monitor, mode = TASKS[task].key("val"), TASKS[task].mode
    ckpt_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="recsys-ckpt-"))
    # a closed-form model has nothing to optimise: it is fitted and validated once, with no Trainer
    trainer, ckpt = (None, None) if cls.closed_form else _trainer(cfg, monitor, mode, ckpt_dir, logger, callbacks,
                                                                  progress, len(train_batches))
    updates = resolve_updates(cfg.updates, data.n_users + data.n_items, trainer.world_size if trainer else 1)
    module, val_sample = _module(data, model_name, model_hp, cfg, loss, updates, train_batches.n_batches,
                                 val_users or cfg.val_users)
    if resume_from:  # a checkpoint of anything but tensors and plain values is refused in one line, here
        scoring.safe_load(resume_from)
    if cls.closed_form:
        return _closed_form(module, data, val_sample, logger, ckpt_dir, monitor, loss, updates)
    t0 = time.perf_counter()
    module.train_batches, module.epoch_lines = train_batches, epoch_lines
    trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=_val_batches(data, val_sample),
                ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    seconds = time.perf_counter() - t0
    if trainer.global_rank != 0:  # a worker process: rank 0 keeps the checkpoint, logs and evaluates
        return None
    best = Path(ckpt.best_model_path)
    score = float(ckpt.best_model_score) if ckpt.best_model_score is not None else float("nan")
    if not best.exists():  # resumed, and the best epoch came before the interruption: its file stayed there,
        # so the run's model is its last epoch's (scored as such)
        best = ckpt_dir / "last.ckpt"
        score = float(trainer.callback_metrics.get(monitor, float("nan")))
    module.load_state_dict(scoring.safe_load(best)["state_dict"])
    module.to("cpu").eval()
    return FitResult(module, best, seconds, trainer.current_epoch, score, monitor, trainer.world_size, loss, updates,
                     chosen)


def fit_worker(spec: dict, checkpoint_dir: Path) -> None:
    """A worker process's share of a multi-process fit, from a worker spec (training.distributed)."""
    from recsys.data.artifact import load

    fit(load(Path(spec["data_dir"])), spec["model"], spec["hp"], TrainConfig.model_validate(spec["cfg"]), None,
        checkpoint_dir, resume_from=Path(spec["resume_from"]) if spec["resume_from"] else None,
        val_users=spec.get("val_users", 0))


def _closed_form(module: TrainingModule, data: Prepared, val_sample, logger, ckpt_dir: Path, monitor: str, loss: str,
                 updates: str) -> FitResult:
    """A model with nothing to optimise (fitted above, in one pass over the training data): validated
    once and saved as a checkpoint of the same layout, with no Trainer, no epoch loop and no process."""
    import pytorch_lightning

    t0 = time.perf_counter()
    module.eval()
    with torch.no_grad():
        for batch in _val_batches(data, val_sample):
            module.validation_step(batch, 0)
        vals = module.validation_metrics()
    if logger is not None:
        logger.log_metrics({**vals, "epoch": 0}, step=0)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "global_step": 0, "pytorch-lightning_version": pytorch_lightning.__version__,
             "state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    for name in ("best.ckpt", "last.ckpt"):
        torch.save(state, ckpt_dir / name)
    return FitResult(module, ckpt_dir / "best.ckpt", time.perf_counter() - t0, 1, float(vals[monitor]), monitor, 1,
                     loss, updates)
