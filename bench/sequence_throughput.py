"""Sequence models on ML-1M-shaped data: the pipeline's training loop against a bare PyTorch loop, and
full-ranking evaluation of every user, same run.

    python bench/sequence_throughput.py [--models sasrec,gru4rec] [--epochs 1] [--threads 1]

Synthetic data the shape of ML-1M (6,040 users, 3,706 items, 1,000,000 interactions; implicit,
leave_last_out). Both loops train the same model with the config's batch size, optimiser and loss (a
softmax over the catalogue) on the same next-item windows; the bare loop is the floor of overhead:
pre-built tensors, one randperm per epoch, slice, step. Prints windows/s for each and the ratio
pipeline / bare (target >= 0.9), then the seconds to rank the whole catalogue for every test user
through `evaluate`'s path (target < 10 s).
"""

import argparse
import time

import pytorch_lightning as pl
import torch
from _common import prep

from recsys import config, evaluation, training
from recsys.data import history, known
from recsys.training.batches import SequenceBatches, chunk_size
from recsys.training.losses import sequence_softmax

p = argparse.ArgumentParser()
p.add_argument("--models", default="sasrec,gru4rec")
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)

raw = prep.load_raw("synthetic", n_users=6040, n_items=3706, n_ratings=1_000_000, seed=42)
data = prep.prepare(raw, task="implicit", split="leave_last_out", positive_threshold=1, eval_negatives=0, seed=42)


def module_for(name, hp, cfg, steps):
    m = training.TrainingModule(model_name=name, n_users=data.n_users, n_items=data.n_items, features={},
                             model_hparams=hp, task="implicit", rating_min=1.0, rating_max=5.0, lr=cfg.lr,
                             weight_decay=cfg.weight_decay, optimizer=cfg.optimizer, scheduler="none", loss="softmax",
                             total_steps=steps, net_weight_decay=cfg.net_weight_decay,
                             bias_weight_decay=cfg.bias_weight_decay)
    m.model.set_known(known.before(data, "val"))  # the train history
    return m


def bare(name, hp, cfg, seq, nxt):
    torch.manual_seed(0)
    m = module_for(name, hp, cfg, 1)
    model, opt = m.model, m.configure_optimizers()
    model.train()
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        perm = torch.randperm(len(seq))
        ss, nn_ = seq[perm], nxt[perm]
        for s in range(0, len(seq), cfg.batch_size):
            loss = sequence_softmax(model, {"seq": ss[s:s + cfg.batch_size], "next": nn_[s:s + cfg.batch_size]}, None)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return len(seq) * a.epochs / (time.perf_counter() - t0)


def pipeline(name, hp, cfg, seq, nxt, owners):
    torch.manual_seed(0)
    batches = SequenceBatches(seq, nxt, owners, batch_size=cfg.batch_size, n_items=data.n_items,
                              chunk=chunk_size(cfg.batch_size * seq.shape[1], 65536))
    m = module_for(name, hp, cfg, a.epochs * batches.n_batches)
    m.train_batches = batches
    trainer = pl.Trainer(max_epochs=a.epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu")
    t0 = time.perf_counter()
    trainer.fit(m, train_dataloaders=batches)
    return len(seq) * a.epochs / (time.perf_counter() - t0), m


print(f"ML-1M-shaped synthetic: {data.n_users:,} users, {data.n_items:,} items, {len(data.train):,} training "
      f"interactions; {a.epochs} epoch(s), {a.threads} torch thread(s)")
for name in a.models.split(","):
    hp, cfg = config.load(name, task="implicit")
    seq, nxt, owners = history.windows(data.train, int(hp["max_len"]))
    b = bare(name, hp, cfg, seq, nxt)
    pl_rate, module = pipeline(name, hp, cfg, seq, nxt, owners)
    module.eval()
    t0 = time.perf_counter()
    ev = evaluation.evaluate(module, data, "test", [10], "full")
    secs = time.perf_counter() - t0
    print(f"{name}: {len(seq):,} windows of {seq.shape[1]}; pipeline {pl_rate:,.0f} windows/s, bare {b:,.0f}, ratio "
          f"{pl_rate / b:.2f}; full-ranking evaluation of {int(ev.metrics['test/n_users']):,} users {secs:.1f}s", flush=True)
