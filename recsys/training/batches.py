"""Training batches: slices of tensors built once per epoch (no per-sample dicts, no collate function).

For the implicit task the negatives of a whole epoch are drawn in one vectorised call at its start.
A batch is a dict of tensors: user_id [B], item_id [B], target [B] (rating, or 1/0 label), and for
the pairwise and listwise losses neg_item_id ([B], or [B, K]); models gather side features from their
own buffers by id.

Lightning costs about a millisecond of hooks per step, as much as a whole MF step at batch 64. So
the training loader hands Lightning a *chunk* (a list of minibatches, ~8k samples) per step and the
module optimises manually, one optimizer step per minibatch: the same updates as one step per
batch, with the per-step overhead paid once per chunk (bench/train_throughput.py measures it).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recsys.data.negatives import sample_train_negatives

# what a batch holds, by the loss's needs
POINTWISE = "pointwise"  # positives and their negatives as rows labelled 1 / 0 (or ratings)
PAIRS = "pairs"  # (user, positive, negative) triples
LISTS = "lists"  # one row per positive with its own num_negatives negatives [P, K]
POSITIVES = "positives"  # positives only (a softmax over the whole catalogue needs no sampled negatives)


class TensorBatches:
    """Iterable of dict batches sliced from tensors; reshuffled (and negatives redrawn) every epoch."""

    def __init__(self, user, item, target, *, batch_size: int, shuffle: bool = True, seed: int = 0,
                 n_items: int = 0, num_negatives: int = 0, seen_keys: np.ndarray | None = None,
                 kind: str = POINTWISE, chunk: int = 0):
        self.user = torch.tensor(np.asarray(user), dtype=torch.long)
        self.item = torch.tensor(np.asarray(item), dtype=torch.long)
        self.target = torch.tensor(np.asarray(target), dtype=torch.float32)
        self.batch_size, self.shuffle, self.seed, self.kind = batch_size, shuffle, seed, kind
        self.n_items, self.seen_keys = n_items, seen_keys
        self.num_negatives = 0 if kind == POSITIVES else num_negatives
        self.epoch = 0
        self.chunk = chunk  # minibatches per yielded chunk; 0 yields plain dict batches (validation)
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

    def _epoch_tensors(self, rng: np.random.Generator, idx: torch.Tensor | None = None) -> dict:
        user, item, target = (self.user, self.item, self.target) if idx is None else (
            self.user[idx], self.item[idx], self.target[idx])
        if not self.num_negatives:
            return {"user_id": user, "item_id": item, "target": target}
        users = user.numpy().repeat(self.num_negatives)
        neg = torch.from_numpy(sample_train_negatives(users, self.n_items, self.seen_keys, rng))
        if self.kind == LISTS:
            return {"user_id": user, "item_id": item, "neg_item_id": neg.view(len(user), self.num_negatives),
                    "target": torch.ones(len(user))}
        if self.kind == PAIRS:
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
        rows = {LISTS: 1, PAIRS: max(1, self.num_negatives)}.get(self.kind, 1 + self.num_negatives)
        return math.ceil(self.n_positives * rows / self.batch_size)

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
    """Minibatches per chunk: about `samples` examples per Lightning step."""
    return max(1, samples // batch_size)
