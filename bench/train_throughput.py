"""Training throughput: the pipeline's Lightning loop against a bare PyTorch loop, same run.

    python bench/train_throughput.py [--models mf,autoint] [--epochs 2] [--threads 1] [--batch-size N]

Both loops train the same model class with the same batch size (the config's unless given), optimiser
(the config's), loss and data (real ML-100K ratings, random split, 80,000 training rows). The bare
loop is the floor of overhead: pre-built tensors, one randperm per epoch, slice, step. Prints samples/s
for each and the ratio pipeline / bare (target >= 0.8).
"""

import argparse
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from _common import ml100k, prep

from recsys import config, training
from recsys.data import features
from recsys.schema import ITEM, RATING, USER
from recsys.training.batches import TensorBatches, chunk_size

p = argparse.ArgumentParser()
p.add_argument("--models", default="mf,autoint")
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--batch-size", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(a.threads)

data = prep.prepare(ml100k(), task="rating", split="random", seed=42)
tables = features.build(data.users, data.items)
tr = data.train
u = torch.tensor(tr[USER].to_numpy(), dtype=torch.long)
i = torch.tensor(tr[ITEM].to_numpy(), dtype=torch.long)
y = torch.tensor(tr[RATING].to_numpy(), dtype=torch.float32)
n = len(u)


def module_for(name, hp, cfg, steps):
    m = training.TrainingModule(model_name=name, n_users=data.n_users, n_items=data.n_items, features=tables.spec(),
                             model_hparams=hp, task="rating", rating_min=1.0, rating_max=5.0, lr=cfg.lr,
                             weight_decay=cfg.weight_decay, optimizer=cfg.optimizer, scheduler="none", loss="mse",
                             total_steps=steps, net_weight_decay=cfg.net_weight_decay,
                             bias_weight_decay=cfg.bias_weight_decay)
    if m.model.uses_features:
        m.model.set_tables(tables.user_cont, tables.user_cat, tables.item_cont, tables.item_cat)
    return m


def bare(name, hp, cfg):
    torch.manual_seed(0)
    m = module_for(name, hp, cfg, 1)
    model, opt = m.model, m.configure_optimizers()
    model.train()
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        perm = torch.randperm(n)
        uu, ii, yy = u[perm], i[perm], y[perm]
        for s in range(0, n, cfg.batch_size):
            pred = 0.5 + 5 * torch.sigmoid(model(uu[s:s + cfg.batch_size], ii[s:s + cfg.batch_size]))
            loss = F.mse_loss(pred, yy[s:s + cfg.batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return n * a.epochs / (time.perf_counter() - t0)


def pipeline(name, hp, cfg):
    torch.manual_seed(0)
    batches = TensorBatches(u, i, y, batch_size=cfg.batch_size, chunk=chunk_size(cfg.batch_size))
    m = module_for(name, hp, cfg, a.epochs * batches.n_batches)
    trainer = pl.Trainer(max_epochs=a.epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu")
    t0 = time.perf_counter()
    trainer.fit(m, train_dataloaders=batches)
    return n * a.epochs / (time.perf_counter() - t0)


print(f"ML-100K ratings, {n:,} training rows, {a.epochs} epochs, {a.threads} torch thread(s)")
print("| model | batch | bare samples/s | pipeline samples/s | ratio |")
print("|---|---|---|---|---|")
for name in a.models.split(","):
    hp, cfg = config.load(name, overrides={"batch_size": a.batch_size} if a.batch_size else {})
    pipeline(name, hp, cfg)  # warm-up (first-call allocations, imports)
    b, q = bare(name, hp, cfg), pipeline(name, hp, cfg)
    print(f"| {name} | {cfg.batch_size} | {b:,.0f} | {q:,.0f} | {q / b:.2f} |", flush=True)
