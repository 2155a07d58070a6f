"""The LightningModule, the fast batch loader, and `fit`.

Batches are slices of tensors built once (no per-sample dicts, no collate function). For the
implicit task the negatives for a whole epoch are drawn in one vectorised call at the start of the
epoch. A batch is a dict: user_id [B], item_id [B], target [B] (rating, or 1/0 label), and for
BPR neg_item_id [B]; the models gather side features from their own buffers by id.

Lightning costs about a millisecond of hooks per step, as much as a whole MF step at batch 64. So
the training loader hands Lightning a *chunk* (a list of minibatches, ~8k samples) per step and the
module optimises manually, one optimizer step per minibatch: the same updates as one step per
batch, with the per-step overhead paid once per chunk (bench/train_throughput.py measures it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from recsys import metrics, ranking, scoring
from recsys.config import TrainConfig
from recsys.data import features as feats
from recsys.data.negatives import sample_train_negatives, sorted_keys
from recsys.data.prepare import Prepared
from recsys.errors import RecsysError
from recsys.models import MODELS, build_model
from recsys.models._fields import FieldEmbedding
from recsys.schema import ITEM, RATING, USER

# Lightning sets its loggers to INFO when imported (device lines, a cloud-logging tip): keep warnings only
for _name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pl.seed_everything(seed, workers=True, verbose=False)


class TensorBatches:
    """Iterable of dict batches sliced from tensors; reshuffled (and negatives redrawn) every epoch."""

    def __init__(self, user, item, target, batch_size: int, shuffle: bool = True, seed: int = 0,
                 n_items: int = 0, num_negatives: int = 0, seen_keys: np.ndarray | None = None, pairwise: bool = False,
                 chunk: int = 0, listwise: bool = False):
        self.user = torch.tensor(np.asarray(user), dtype=torch.long)
        self.item = torch.tensor(np.asarray(item), dtype=torch.long)
        self.target = torch.tensor(np.asarray(target), dtype=torch.float32)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.n_items, self.num_negatives, self.seen_keys, self.pairwise = n_items, num_negatives, seen_keys, pairwise
        self.listwise = listwise  # sampled softmax: one row per positive, with its negatives [P, num_negatives]
        self.epoch = 0
        # minibatches per yielded chunk; 0 yields plain dict batches (validation)
        self.chunk = chunk
        self.rank, self.world = 0, 1  # set by the module's setup() under a multi-process strategy
        self.samples = 0  # examples yielded in the current epoch (this process's shard)

    def shard(self, rank: int, world: int) -> None:
        """Each of `world` processes takes every world-th positive of the epoch's shared permutation
        (padded by wrapping round to a multiple of `world`, as torch's DistributedSampler does, so every
        process runs the same number of steps); negatives are drawn per process from its own stream.
        One optimizer step per training step: DDP reduces gradients once per forward."""
        self.rank, self.world = rank, world
        if world > 1:
            self.chunk = 0

    def _epoch_tensors(self, rng: np.random.Generator, idx: np.ndarray | None = None):
        user, item, target = (self.user, self.item, self.target) if idx is None else (
            self.user[idx], self.item[idx], self.target[idx])
        if not self.num_negatives:
            return {"user_id": user, "item_id": item, "target": target}
        users = user.numpy().repeat(self.num_negatives)
        neg = torch.from_numpy(sample_train_negatives(users, self.n_items, self.seen_keys, rng))
        if self.listwise:  # sampled softmax: each positive with its own num_negatives negatives
            return {"user_id": user, "item_id": item, "neg_item_id": neg.view(len(user), self.num_negatives),
                    "target": torch.ones(len(user))}
        if self.pairwise:  # BPR: (user, positive, negative) triples
            return {"user_id": torch.from_numpy(users), "item_id": item.repeat_interleave(self.num_negatives),
                    "neg_item_id": neg, "target": torch.ones(len(users))}
        return {"user_id": torch.cat([user, torch.from_numpy(users)]), "item_id": torch.cat([item, neg]),
                "target": torch.cat([torch.ones(len(user)), torch.zeros(len(users))])}

    @property
    def n_positives(self) -> int:
        """Positives (or ratings) this process sees per epoch."""
        return math.ceil(len(self.user) / self.world)

    @property
    def n_batches(self) -> int:
        if self.listwise:
            return math.ceil(self.n_positives / self.batch_size)
        n = self.n_positives * (1 + self.num_negatives if not self.pairwise else max(1, self.num_negatives))
        return math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.n_batches / self.chunk) if self.chunk else self.n_batches

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = None
        if self.world > 1:  # the permutation is shared (same seed); the negatives' stream is per process
            perm = np.resize(rng.permutation(len(self.user)), self.n_positives * self.world)
            idx = torch.from_numpy(perm[self.rank::self.world])
            rng = np.random.default_rng([self.seed, self.epoch, 1 + self.rank])
        self.epoch += 1
        data = self._epoch_tensors(rng, idx)
        n = len(data["user_id"])
        self.samples = n
        if self.shuffle:
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            perm = torch.randperm(n, generator=g)
            data = {k: v[perm] for k, v in data.items()}
        batches = ({k: v[s:s + self.batch_size] for k, v in data.items()} for s in range(0, n, self.batch_size))
        if not self.chunk:
            yield from batches
            return
        chunk = []
        for b in batches:
            chunk.append(b)
            if len(chunk) == self.chunk:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def chunk_size(batch_size: int, samples: int = 8192) -> int:
    return max(1, samples // batch_size)


def decay_groups(model: nn.Module, weight_decay: float, net_weight_decay: float,
                 bias_weight_decay: float | None = None) -> list[dict]:
    """Optimizer parameter groups, as recommender libraries separate their regularisers (Surprise's
    reg_bu/reg_bi against reg_pu/reg_qi, libFM's bias, linear and pairwise terms): the first-order
    terms (the modules a model marks `first_order`: mf's and ncf's user and item biases, fm's linear
    part, wide_deep's wide part, autoint's `include_bias`) decay by `bias_weight_decay` (None: as the
    tables, which is how checkpoints from before this group trained), the other
    embedding tables (every `nn.Embedding` and the feature projections of a `FieldEmbedding`) by
    `weight_decay`, every other trainable weight by `net_weight_decay`."""
    table, bias = set(), set()
    for m in model.modules():
        if getattr(m, "first_order", False):  # marked by the model (recsys.models._fields.first_order)
            bias |= {id(p) for p in m.parameters()}
        elif isinstance(m, (nn.Embedding, FieldEmbedding)):
            table |= {id(p) for p in m.parameters()}
    table -= bias
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in table], "weight_decay": weight_decay},
              {"params": [p for p in params if id(p) in bias],
               "weight_decay": weight_decay if bias_weight_decay is None else bias_weight_decay},
              {"params": [p for p in params if id(p) not in table | bias], "weight_decay": net_weight_decay}]
    return [g for g in groups if g["params"]]


class Recommender(pl.LightningModule):
    """Wraps any registered model for either task; built from plain values only."""

    def __init__(self, model_name: str, n_users: int, n_items: int, features: dict, model_hparams: dict,
                 task: str, rating_min: float, rating_max: float, lr: float, weight_decay: float,
                 optimizer: str, scheduler: str, loss: str, total_steps: int, net_weight_decay: float | None = None,
                 bias_weight_decay: float | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # one optimizer step per minibatch of a chunk
        self.model = build_model(model_name, n_users, n_items, features, **model_hparams)
        self.lo, self.hi = scoring.rating_range(rating_min, rating_max)
        self.loss_name = loss if loss != "auto" else ("mse" if task == "rating" else "bce")
        self.ranking_context = None  # set by fit() for the implicit task's validation ranking
        self.train_batches = None  # set by fit(): its epoch follows the trainer's (a resumed run goes on)
        self.epoch_lines = False  # one printed line per epoch (set by fit)
        self._last_val: dict[str, float] = {}
        self._val_epoch = -1
        self._sums: dict[str, list] = {}

    # scores -----------------------------------------------------------------------------------
    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Predictions: a rating in the rating range, or P(positive) for implicit."""
        return scoring.output(self.model(user, item), self.hparams.task, self.lo, self.hi)

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        return scoring.output(raw, "rating", self.lo, self.hi)

    def to_logit(self, rating: torch.Tensor) -> torch.Tensor:
        p = ((rating - self.lo) / (self.hi - self.lo)).clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))

    def _loss(self, batch) -> torch.Tensor:
        if self.loss_name == "softmax":  # sampled-free: each positive against the whole catalogue
            logits = self.model.score_matrix(batch["user_id"])  # [B, n_items]
            return F.cross_entropy(logits, batch["item_id"])
        if self.loss_name == "sampled_softmax":  # each positive against its sampled negatives, one forward
            user, neg = batch["user_id"], batch["neg_item_id"]  # [B], [B, K]
            b, k = neg.shape
            raw = self.model(torch.cat([user, user.repeat_interleave(k)]), torch.cat([batch["item_id"], neg.flatten()]))
            logits = torch.cat([raw[:b, None], raw[b:].view(b, k)], 1)  # the positive in column 0
            return F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=logits.device))
        raw = self.model(batch["user_id"], batch["item_id"])
        if self.loss_name == "bpr":
            neg = self.model(batch["user_id"], batch["neg_item_id"])
            return -F.logsigmoid(raw - neg).mean()
        if self.hparams.task == "rating":
            return F.mse_loss(self.squash(raw), batch["target"])
        if self.loss_name == "mse":
            return F.mse_loss(torch.sigmoid(raw), batch["target"])
        return F.binary_cross_entropy_with_logits(raw, batch["target"])

    # steps ------------------------------------------------------------------------------------
    def _accumulate(self, key: str, value: torch.Tensor, n: int) -> None:
        s = self._sums.setdefault(key, [0.0, 0])
        s[0] += value.detach() * n
        s[1] += n

    def _flush(self, prefix: str) -> dict:
        out = {}
        for key in [k for k in self._sums if k.startswith(prefix)]:
            total, n = self._sums.pop(key)
            out[key] = float(total / max(n, 1))
        return out

    def training_step(self, chunk, batch_idx):
        if not any(p.requires_grad for p in self.parameters()):
            return None  # popularity: fitted from counts, nothing to optimise
        opt, sched = self.optimizers(), self.lr_schedulers()
        for batch in chunk if isinstance(chunk, list) else [chunk]:
            loss = self._loss(batch)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            if sched is not None:
                sched.step()
            self._accumulate("train/loss", loss, len(batch["user_id"]))

    def setup(self, stage: str) -> None:
        if self.train_batches is not None and stage == "fit":
            self.train_batches.shard(self.global_rank, self.trainer.world_size)

    def on_train_epoch_start(self):
        if self.train_batches is not None:
            self.train_batches.epoch = self.current_epoch

    def on_train_epoch_end(self):
        vals = self._flush("train/")
        if self.train_batches is not None:
            vals["train/samples_per_process"] = float(self.train_batches.samples)
        if vals:  # averaged over processes (identical on one)
            self.log_dict(vals, on_epoch=True, sync_dist=self.trainer.world_size > 1)
        # one line per validated epoch (validation ran before this hook; a run resumed from a checkpoint
        # taken at the end of an epoch's validation finishes that epoch without validating it again)
        if self.epoch_lines and self.global_rank == 0 and self._val_epoch == self.current_epoch:
            shown = {**{k: float(v) for k, v in vals.items()}, **self._last_val}
            text = " ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items()) if "samples" not in k)
            print(f"epoch {self.current_epoch + 1}/{self.trainer.max_epochs} {text}", flush=True)

    def validation_step(self, batch, batch_idx):
        n = len(batch["user_id"])
        if self.hparams.task == "rating":
            pred = self.squash(self.model(batch["user_id"], batch["item_id"]))
            se = F.mse_loss(pred, batch["target"])
            self._accumulate("val/loss", se, n)
        else:
            raw = self.model(batch["user_id"], batch["item_id"])
            self._accumulate("val/loss", F.binary_cross_entropy_with_logits(raw, batch["target"]), n)

    def on_validation_epoch_end(self):
        vals = self._flush("val/")
        if self.hparams.task == "rating":
            vals["val/rmse"] = math.sqrt(vals["val/loss"])
        elif self.ranking_context is not None:
            users, targets, exclude = self.ranking_context
            ranks, _ = ranking.rank_targets(self.model, users, targets, exclude, self.hparams.n_items)
            vals["val/ndcg_at_10"] = metrics.ndcg(ranks, 10)
            vals["val/hr_at_10"] = metrics.hit_rate(ranks, 10)
        self._last_val, self._val_epoch = {k: float(v) for k, v in vals.items()}, self.current_epoch
        # every process ranks the whole validation set with the same weights: identical values
        self.log_dict(vals, on_epoch=True, prog_bar=True, sync_dist=self.trainer.world_size > 1)

    def configure_optimizers(self):
        hp = self.hparams
        net_wd = hp.weight_decay if hp.get("net_weight_decay") is None else hp.net_weight_decay
        groups = decay_groups(self.model, hp.weight_decay, net_wd, hp.get("bias_weight_decay"))
        if not groups:
            return None
        opt = (torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam)(groups, lr=hp.lr)
        total = hp.total_steps
        if self.train_batches is not None and self.train_batches.world > 1:  # each process steps on its shard
            total = self.trainer.max_epochs * self.train_batches.n_batches
        if hp.scheduler == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=max(total, 1))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt


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
    module: Recommender
    checkpoint: Path
    seconds: float
    epochs: int
    best_score: float
    monitor: str
    world_size: int = 1


def monitor_for(task: str) -> tuple[str, str]:
    return ("val/rmse", "min") if task == "rating" else ("val/ndcg_at_10", "max")


def check_trainer(cfg: TrainConfig) -> None:
    """Build (and discard) a Trainer with the run's accelerator / devices / strategy, so a setting
    Lightning would reject fails as one line before anything is logged."""
    try:
        pl.Trainer(accelerator=cfg.accelerator, devices=_devices(cfg.devices), strategy=cfg.strategy,
                   num_nodes=cfg.num_nodes, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecsysError(f"accelerator={cfg.accelerator!r}, devices={cfg.devices!r}, strategy={cfg.strategy!r}: "
                          f"{msg[:300]}") from None


def fit(data: Prepared, model_name: str, model_hp: dict, cfg: TrainConfig, logger=None,
        checkpoint_dir: Path | None = None, progress: bool = False, resume_from: Path | None = None,
        epoch_lines: bool = False, callbacks: tuple = (), val_users: int = 0) -> FitResult | None:
    """Train `model_name` on `data` and restore the best checkpoint (by the validation metric).
    Under a multi-process strategy every process calls this; only global rank 0 gets a result.
    `val_users` > 0 (implicit): the per-epoch validation ranking uses a seeded sample of that many users.

    `checkpoint_dir` receives best.ckpt and last.ckpt (every epoch: what an interrupted run leaves);
    `resume_from` (a last.ckpt) restores weights, optimizer, scheduler, callbacks and the epoch."""
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task = data.meta["task"]
    tables = feats.build(data.users, data.items)
    tr = data.train
    u, i = tr[USER].to_numpy(np.int64), tr[ITEM].to_numpy(np.int64)
    implicit = task == "implicit"
    loss = cfg.loss
    if loss in ("bpr", "softmax", "sampled_softmax") and not implicit:
        raise RecsysError(f"loss={loss} needs task=implicit data; use loss=auto (mse) for ratings")
    if loss == "softmax" and not hasattr(MODELS[model_name], "score_matrix"):
        raise RecsysError(f"loss=softmax scores the whole catalogue and needs a dot-product model (mf); "
                          f"{model_name} has no score_matrix: use sampled_softmax (against num_negatives sampled items), bce or bpr")
    seen = sorted_keys(u, i, data.n_items) if implicit else None
    train_batches = TensorBatches(u, i, tr[RATING].to_numpy(np.float32), cfg.batch_size, True, cfg.seed,
                                  data.n_items, cfg.num_negatives if implicit and loss != "softmax" else 0, seen,
                                  loss == "bpr",
                                  chunk=chunk_size(cfg.batch_size * (1 + cfg.num_negatives) if loss == "sampled_softmax"
                                                   else cfg.batch_size),
                                  listwise=loss == "sampled_softmax")
    va = data.val
    if implicit:  # val/loss on val positives + their stored negatives (fixed, so comparable across epochs)
        negs = data.negatives[data.negatives[USER].isin(va[USER])]
        vu = np.concatenate([va[USER].to_numpy(), negs[USER].to_numpy()])
        vi = np.concatenate([va[ITEM].to_numpy(), negs[ITEM].to_numpy()])
        vt = np.concatenate([np.ones(len(va)), np.zeros(len(negs))])
    else:
        vu, vi, vt = va[USER].to_numpy(), va[ITEM].to_numpy(), va[RATING].to_numpy()
    val_batches = TensorBatches(vu, vi, vt, 1 << 14, shuffle=False)

    module = Recommender(model_name, data.n_users, data.n_items, tables.spec(), model_hp, task,
                         data.meta["rating_min"], data.meta["rating_max"], cfg.lr, cfg.weight_decay,
                         cfg.optimizer, cfg.scheduler, loss, cfg.epochs * train_batches.n_batches,
                         cfg.net_weight_decay, cfg.bias_weight_decay)
    if hasattr(module.model, "set_tables"):
        module.model.set_tables(tables.user_cont, tables.user_cat, tables.item_cont, tables.item_cat)
    if hasattr(module.model, "fit"):
        module.model.fit(torch.as_tensor(u), torch.as_tensor(i), torch.as_tensor(tr[RATING].to_numpy()),
                         task, module.to_logit)
    if implicit:
        exclude = ranking.CSR.build(u, i, data.n_users)
        val_user_ids = va[USER].to_numpy(np.int64)
        vcsr = ranking.CSR.build(val_user_ids, va[ITEM].to_numpy(np.int64), data.n_users)
        users = ranking.sample_users(np.unique(val_user_ids), val_users, data.meta.get("seed", 0) or 0)
        module.ranking_context = (users, vcsr.padded(users), exclude)

    monitor, mode = monitor_for(task)
    ckpt_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="recsys-ckpt-"))
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                           enable_version_counter=False, save_last=True)
    stop = MinEpochsEarlyStopping(cfg.min_epochs, monitor=monitor, mode=mode, patience=cfg.patience,
                                  check_on_train_epoch_end=False)
    trainable = any(p.requires_grad for p in module.parameters())
    trainer = pl.Trainer(
        max_epochs=cfg.epochs if trainable else 1, accelerator=cfg.accelerator,
        # nothing to optimise (popularity): one process, whatever the strategy
        devices=_devices(cfg.devices) if trainable else 1, strategy=cfg.strategy if trainable else "auto",
        num_nodes=cfg.num_nodes if trainable else 1, logger=logger if logger is not None else False,
        callbacks=[ckpt, stop, *callbacks],
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        deterministic=True, log_every_n_steps=max(1, len(train_batches)),
    )
    t0 = time.perf_counter()
    module.train_batches, module.epoch_lines = train_batches, epoch_lines
    trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=val_batches,
                ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    seconds = time.perf_counter() - t0
    if trainer.global_rank != 0:  # a worker process: rank 0 keeps the checkpoint, logs and evaluates
        return None
    if not ckpt.best_model_path:  # no optimizer step was taken (popularity): Lightning saved nothing
        trainer.save_checkpoint(ckpt_dir / "best.ckpt")
        ckpt.best_model_path = str(ckpt_dir / "best.ckpt")
        ckpt.best_model_score = trainer.callback_metrics.get(monitor)
    best = Path(ckpt.best_model_path)
    state = scoring.safe_load(best)["state_dict"]
    module.load_state_dict(state)
    module.to("cpu").eval()
    score = float(ckpt.best_model_score) if ckpt.best_model_score is not None else float("nan")
    return FitResult(module, best, seconds, trainer.current_epoch, score, monitor, trainer.world_size)


WORKER_ENV = "RECSYS_DDP_WORKER"


def worker_rank() -> int:
    """Non-zero in a process a multi-process strategy started besides rank 0: Lightning re-runs the
    step's command with LOCAL_RANK set, and a multi-node launch sets NODE_RANK on the other nodes."""
    def env(name):
        try:
            return int(os.environ.get(name, "0") or 0)
        except ValueError:
            return 0
    return env("LOCAL_RANK") + env("NODE_RANK")


def hand_off(data_dir: Path, model_name: str, model_hp: dict, cfg: TrainConfig, resume_from: Path | None,
             val_users: int = 0) -> None:
    """What this node's worker processes train (they inherit the environment when Lightning launches
    them): the same data folder, model and resolved config, so they never talk to MLflow."""
    os.environ[WORKER_ENV] = json.dumps({"data_dir": str(data_dir), "model": model_name, "hp": model_hp,
                                         "cfg": asdict(cfg), "resume_from": str(resume_from or ""),
                                         "val_users": val_users})


def handed_off() -> dict | None:
    spec = os.environ.get(WORKER_ENV)
    return json.loads(spec) if spec else None


def _devices(d: str):
    return int(d) if str(d).isdigit() else d


def load_module(checkpoint: str | Path) -> Recommender:
    ck = scoring.safe_load(checkpoint)
    module = Recommender(**ck["hyper_parameters"])
    module.load_state_dict(ck["state_dict"])
    return module.eval()
