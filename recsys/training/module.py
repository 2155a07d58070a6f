"""The LightningModule: any registered model, either task, built from plain values only (so a
checkpoint rebuilds its model alone), one optimizer step per minibatch of a chunk."""

from __future__ import annotations

import logging
import math
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from recsys import metrics, ranking
from recsys.models.base import output, rating_range
from recsys.models import build_model
from recsys.models._fields import FieldEmbedding
from recsys.progress import duration
from recsys.schema import RANKING, RANKING_K
from recsys.training.losses import loss_function
from recsys.training.optim import RowAdam, RowAdamW, use_row_updates

# Lightning sets its loggers to INFO when imported (device lines, a cloud-logging tip): keep warnings only
for _name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def decay_groups(model: nn.Module, weight_decay: float, net_weight_decay: float,
                 bias_weight_decay: float) -> list[dict]:
    """Optimizer parameter groups, as recommender libraries separate their regularisers (Surprise's
    reg_bu/reg_bi against reg_pu/reg_qi, libFM's bias, linear and pairwise terms): the first-order
    terms (the modules a model marks `first_order`) decay by `bias_weight_decay`, the other embedding tables (every
    `nn.Embedding` and the feature projections of a `FieldEmbedding`) by `weight_decay`, every other
    trainable weight by `net_weight_decay`."""
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
               "weight_decay": bias_weight_decay},
              {"params": [p for p in params if id(p) not in table | bias], "weight_decay": net_weight_decay}]
    return [g for g in groups if g["params"]]


class TrainingModule(pl.LightningModule):
    """Wraps any registered model for either task. `loss` and `updates` (dense | rows: the embedding
    tables take sparse gradients and a row-wise step, recsys.training.optim) are resolved by fit."""

    def __init__(self, *, model_name: str, n_users: int, n_items: int, features: dict, model_hparams: dict,
                 task: str, rating_min: float, rating_max: float, lr: float, weight_decay: float,
                 optimizer: str, scheduler: str, loss: str, total_steps: int, net_weight_decay: float,
                 bias_weight_decay: float, updates: str = "dense"):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # one optimizer step per minibatch of a chunk
        self.model = build_model(model_name, n_users, n_items, features, **model_hparams)
        if updates == "rows":
            use_row_updates(self.model)
        self.lo, self.hi = rating_range(rating_min, rating_max)
        self.loss_name = loss  # resolved by fit (config.resolve_loss)
        self.ranking_context = None  # set by fit() for the implicit task's validation ranking
        # set by fit() for ratings: (cold user [n_users], cold item [n_items], their answer [n_items]): the
        # cold-start answers evaluation gives (recsys/data/known.py), so val/rmse is evaluate's figure
        self.rating_answers = None
        self.train_batches = None  # set by fit(): its epoch follows the trainer's (a resumed run goes on)
        self.epoch_lines = False  # one printed line per epoch (set by fit): its seconds and the time left
        self._epoch_seconds: list[float] = []
        self._last_val: dict[str, float] = {}
        self._val_epoch = -1
        self._sums: dict[str, list] = {}

    # scores -----------------------------------------------------------------------------------
    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Predictions: a rating in the rating range, or P(positive) for implicit."""
        return self.squash(self.model(user, item))

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        return output(raw, self.hparams.task, self.lo, self.hi)

    def to_logit(self, rating: torch.Tensor) -> torch.Tensor:
        """The raw score a rating squashes back from (closed-form models store raw scores)."""
        p = ((rating - self.lo) / (self.hi - self.lo)).clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))

    def training_loss(self, batch) -> torch.Tensor:
        return loss_function(self.loss_name, type(self.model))(self.model, batch, self.squash)

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
        if self.model.closed_form:
            return None  # fitted from counts by fit(), nothing to optimise
        opt, sched = self.optimizers(), self.lr_schedulers()
        for batch in chunk if isinstance(chunk, list) else [chunk]:
            loss = self.training_loss(batch)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            if sched is not None:
                sched.step()
            self._accumulate("train/loss", loss, len(batch["user_id"]))

    def setup(self, stage: str) -> None:
        if self.train_batches is not None and stage == "fit":
            self.train_batches.shard(self.global_rank, self.trainer.world_size)
            device = self.trainer.strategy.root_device
            if device.type == "cuda":  # the epoch's tensors live on the GPU: no host-to-device copy per step
                self.train_batches.to(device)

    def on_train_epoch_start(self):
        self._epoch_started = time.perf_counter()
        if self.train_batches is not None:
            self.train_batches.epoch = self.current_epoch

    def on_train_epoch_end(self):
        vals = self._flush("train/")
        if self.train_batches is not None:
            vals["train/samples_per_process"] = float(self.train_batches.samples)
        if vals:  # averaged over processes (identical on one)
            self.log_dict(vals, on_epoch=True, sync_dist=self.trainer.world_size > 1)
        # one line per validated epoch, named by its model (main trains several side by side; validation ran
        # before this hook; a run resumed from a checkpoint
        # taken at the end of an epoch's validation finishes that epoch without validating it again)
        seconds = time.perf_counter() - getattr(self, "_epoch_started", time.perf_counter())  # training + validation
        self._epoch_seconds.append(seconds)
        self.log("time/epoch_seconds", seconds, on_epoch=True)
        if self.epoch_lines and self.global_rank == 0 and self._val_epoch == self.current_epoch:
            shown = {**{k: float(v) for k, v in vals.items()}, **self._last_val}
            text = " ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items()) if "samples" not in k)
            done, total = self.current_epoch + 1, self.trainer.max_epochs
            recent = self._epoch_seconds[-3:]  # the last few epochs: the first can carry warm-up
            left = (total - done) * sum(recent) / len(recent)
            print(f"{self.hparams.model_name} epoch {done}/{total} {seconds:.1f}s (at most {duration(left)} left, early stopping may end it "
                  f"sooner) {text}", flush=True)

    def validation_step(self, batch, batch_idx):
        raw = self.model(batch["user_id"], batch["item_id"])
        if self.hparams.task == "rating":
            pred = self.squash(raw)
            loss = F.mse_loss(pred, batch["target"])
            if self.rating_answers is not None:  # what evaluation scores: a cold pair gets its answer
                if self.rating_answers[0].device != pred.device:  # moved once, not every batch
                    self.rating_answers = tuple(t.to(pred.device) for t in self.rating_answers)
                cold_user, cold_item, answer = self.rating_answers
                u, i = batch["user_id"], batch["item_id"]
                pred = torch.where(cold_user[u] | cold_item[i], answer[i], pred)
            self._accumulate("val/se", F.mse_loss(pred, batch["target"]), len(batch["user_id"]))
        else:
            loss = F.binary_cross_entropy_with_logits(raw, batch["target"])
        self._accumulate("val/loss", loss, len(batch["user_id"]))

    def on_validation_epoch_end(self):
        vals = self.validation_metrics()
        self._last_val, self._val_epoch = {k: float(v) for k, v in vals.items()}, self.current_epoch
        # every process ranks the whole validation set with the same weights: identical values
        self.log_dict(vals, on_epoch=True, prog_bar=True, sync_dist=self.trainer.world_size > 1)

    def validation_metrics(self) -> dict:
        """The validation loss accumulated by validation_step, and the task's metrics."""
        vals = self._flush("val/")
        if self.hparams.task == "rating":
            vals["val/rmse"] = math.sqrt(vals.pop("val/se", vals["val/loss"]))
        elif self.ranking_context is not None:
            users, targets, exclude, cold, fallback = self.ranking_context
            ranks, _ = ranking.rank_targets(self.model, users, targets, exclude, self.hparams.n_items,
                                            fallback=fallback, cold=cold)
            vals[RANKING.key("val")] = metrics.ndcg(ranks, RANKING_K)
            vals[f"val/hr_at_{RANKING_K}"] = metrics.hit_rate(ranks, RANKING_K)
        return vals

    def configure_optimizers(self):
        hp = self.hparams
        groups = decay_groups(self.model, hp.weight_decay, hp.net_weight_decay, hp.bias_weight_decay)
        if not groups:
            return None
        # the fused kernel: one pass over each tensor instead of a dozen (about 2.7x faster a step on CPU)
        fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        rows = hp.get("updates") == "rows"
        opt = ((RowAdamW if rows else torch.optim.AdamW) if hp.optimizer == "adamw" else
               (RowAdam if rows else torch.optim.Adam))(groups, lr=hp.lr, fused=fused)
        total = hp.total_steps
        if self.train_batches is not None and self.train_batches.world > 1:  # each process steps on its shard
            total = self.trainer.max_epochs * self.train_batches.n_batches
        if hp.scheduler == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=max(total, 1))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt
