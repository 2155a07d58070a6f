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
                 kind: str = POINTWISE, chunk: int = 0, shared_negatives: int = 0,
                 popularity: np.ndarray | None = None):
        self.user = torch.tensor(np.asarray(user), dtype=torch.long)
        self.item = torch.tensor(np.asarray(item), dtype=torch.long)
        self.target = torch.tensor(np.asarray(target), dtype=torch.float32)
        self.batch_size, self.shuffle, self.seed, self.kind = batch_size, shuffle, seed, kind
        self.n_items, self.seen_keys = n_items, seen_keys
        self.num_negatives = 0 if kind == POSITIVES else num_negatives
        # POSITIVES with shared_negatives > 0: each minibatch carries that many items drawn by popularity
        # (with replacement) for a sampled softmax, and their log-probabilities for its log-Q correction
        self.shared_negatives = shared_negatives if kind == POSITIVES else 0
        if self.shared_negatives:
            self.q, self.log_q = popularity_distribution(popularity, n_items)
            self.cdf = np.cumsum(self.q)
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

    def to(self, device: torch.device) -> "TensorBatches":
        """Keep the epoch's tensors on `device` (a GPU): batches are sliced there, not copied per step."""
        self.user, self.item, self.target = self.user.to(device), self.item.to(device), self.target.to(device)
        if self.shared_negatives:
            self.log_q = self.log_q.to(device)
        return self

    def _epoch_tensors(self, rng: np.random.Generator, idx: torch.Tensor | None = None) -> dict:
        user, item, target = (self.user, self.item, self.target) if idx is None else (
            self.user[idx.to(self.user.device)], self.item[idx.to(self.user.device)], self.target[idx.to(self.user.device)])
        if not self.num_negatives:
            return {"user_id": user, "item_id": item, "target": target}
        users = user.cpu().numpy().repeat(self.num_negatives)
        neg = torch.from_numpy(sample_train_negatives(users, self.n_items, self.seen_keys, rng)).to(user.device)
        users = torch.from_numpy(users).to(user.device)
        if self.kind == LISTS:
            return {"user_id": user, "item_id": item, "neg_item_id": neg.view(len(user), self.num_negatives),
                    "target": torch.ones(len(user), device=user.device)}
        ones = torch.ones(len(users), device=user.device)
        if self.kind == PAIRS:
            return {"user_id": users, "item_id": item.repeat_interleave(self.num_negatives),
                    "neg_item_id": neg, "target": ones}
        return {"user_id": torch.cat([user, users]), "item_id": torch.cat([item, neg]),
                "target": torch.cat([torch.ones(len(user), device=user.device), torch.zeros_like(ones)])}

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
            perm = torch.randperm(n, generator=g).to(data["user_id"].device)
            data = {k: v[perm] for k, v in data.items()}
        batches = ({k: v[s:s + self.batch_size] for k, v in data.items()} for s in range(0, n, self.batch_size))
        if self.shared_negatives:  # the whole epoch's draws in one call: [n_batches, N]
            draws = np.searchsorted(self.cdf, rng.random((math.ceil(n / self.batch_size), self.shared_negatives)))
            negatives = torch.from_numpy(np.minimum(draws, self.n_items - 1)).to(data["user_id"].device)
            batches = ({**b, "negatives": negatives[j], "log_q": self.log_q} for j, b in enumerate(batches))
        yield from chunked(batches, self.chunk)


def popularity_distribution(popularity: np.ndarray | None, n_items: int) -> tuple[np.ndarray, torch.Tensor]:
    """The sampling distribution of shared negatives (training counts, add-one smoothed) and its log."""
    counts = np.asarray(popularity if popularity is not None else np.ones(n_items), dtype=np.float64) + 1.0
    q = counts / counts.sum()
    return q, torch.from_numpy(np.log(q)).float()


def chunked(batches, chunk: int):
    """Minibatches one by one (chunk 0: validation), or in lists of `chunk` (one Lightning step each)."""
    if not chunk:
        yield from batches
        return
    group = []
    for b in batches:
        group.append(b)
        if len(group) == chunk:
            yield group
            group = []
    if group:
        yield group


def chunk_size(batch_size: int, samples: int = 8192) -> int:
    """Minibatches per chunk: about `samples` examples per Lightning step."""
    return max(1, samples // batch_size)


BUCKET_BATCHES = 64  # trimmed sequence batches: windows sorted by length within runs of this many batches
SEQUENCES = "sequences"  # next-item windows: seq [B, L] and next [B, L] (codes + 1, 0 = padding)


class SequenceBatches:
    """Next-item training windows (recsys.data.history.windows), shuffled every epoch, in the same
    chunks, shards and epochs as TensorBatches. With `shared_negatives` > 0 each minibatch also carries
    that many items drawn by popularity (with replacement) for a sampled softmax, and the table of
    their log-probabilities for its log-Q correction; with `negatives_per_position`, one uniformly drawn
    item per position (SASRec's original BCE); with `seen` (recsys.data.history.seen: `exclude_seen`),
    the pairs `seen_window`, `seen_item`, `seen_first` [S] (each window's user's distinct train items and
    the place of each one's first occurrence in the user's sequence) and `place` [B, L] (each position's
    target's place, -1 if none).

    `trim` (a model whose padding changes nothing: SASRec masks it): windows of like length share a batch
    (`_buckets`: as many batches as without, each about as many target positions), the batches' order is
    shuffled, and a batch keeps only the columns its longest window fills: short windows are not computed
    at max_len. The same windows in an epoch, each once; only which windows share a batch changes."""

    kind = SEQUENCES

    def __init__(self, seq: torch.Tensor, nxt: torch.Tensor, users: torch.Tensor, *, batch_size: int, seed: int = 0,
                 n_items: int = 0, popularity: np.ndarray | None = None, shared_negatives: int = 0,
                 negatives_per_position: bool = False, chunk: int = 0, seen: tuple | None = None,
                 trim: bool = False):
        self.seq, self.next, self.users, self.trim = seq, nxt, users, trim
        self.lengths = (nxt > 0).sum(1).numpy()  # [W] targets per window
        self.seen, self.owners = seen, users.numpy()
        self.batch_size, self.seed, self.n_items, self.chunk = batch_size, seed, n_items, chunk
        self.shared_negatives, self.negatives_per_position = shared_negatives, negatives_per_position
        self.q, self.log_q = popularity_distribution(popularity, n_items)
        self.epoch, self.rank, self.world, self.samples = 0, 0, 1, 0

    def shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        if world > 1:
            self.chunk = 0

    @property
    def n_positives(self) -> int:
        return math.ceil(len(self.seq) / self.world)

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n_positives / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.n_batches / self.chunk) if self.chunk else self.n_batches

    def to(self, device: torch.device) -> "SequenceBatches":
        """Keep the windows on `device` (a GPU): batches are sliced there, not copied per step."""
        self.seq, self.next, self.users, self.log_q = (x.to(device) for x in (self.seq, self.next, self.users, self.log_q))
        return self

    def _batch(self, idx: torch.Tensor, rng: np.random.Generator) -> dict:
        device = self.seq.device
        idx = idx.to(device)
        b = {"user_id": self.users[idx], "seq": self.seq[idx], "next": self.next[idx]}
        if self.trim:  # left-padded: the columns a batch's longest window fills are the last ones
            keep = max(1, int(self.lengths[idx.cpu().numpy()].max()))
            b["seq"], b["next"] = b["seq"][:, -keep:], b["next"][:, -keep:]
        if self.shared_negatives:
            b["negatives"] = torch.from_numpy(rng.choice(self.n_items, self.shared_negatives, p=self.q)).to(device)
            b["log_q"] = self.log_q
        if self.negatives_per_position:
            b["neg_next"] = torch.from_numpy(rng.integers(0, self.n_items, size=tuple(b["next"].shape))).to(device) + 1
        if self.seen is not None:
            b.update(self._first_seen(idx.cpu().numpy(), device))
            b["place"] = b["place"][:, -b["seq"].shape[1]:]
        return b

    def _buckets(self, perm: np.ndarray) -> list[np.ndarray]:
        """Windows of like length together: each run of BUCKET_BATCHES x batch_size shuffled windows sorted
        by length and cut into as many batches as it would give unsorted, at equal shares of its target
        positions (a batch of short windows holds more of them), so a step weighs as many positions as
        before, whatever the lengths it holds."""
        out = []
        run = BUCKET_BATCHES * self.batch_size
        for p in np.split(perm, range(run, len(perm), run)):
            p = p[np.argsort(self.lengths[p], kind="stable")]
            k = -(-len(p) // self.batch_size)
            cum = np.cumsum(self.lengths[p])
            cuts = np.searchsorted(cum, cum[-1] * np.arange(1, k) / k)
            cuts = np.clip(cuts, np.arange(1, k), len(p) - np.arange(k - 1, 0, -1))  # no batch empty
            cuts = np.maximum.accumulate(np.maximum(cuts, np.arange(1, k)))
            out += np.split(p, cuts)
        return out

    def _first_seen(self, idx: np.ndarray, device) -> dict:
        """The windows' users' distinct train items as pairs (window row, item, its first place), and each
        position's place: sparse, so its cost follows the users' items, not the catalogue."""
        indptr, items, first, place = self.seen
        owners = self.owners[idx]
        starts, lens = indptr[owners], indptr[owners + 1] - indptr[owners]
        at = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(lens.sum())  # the owners' CSR entries
        return {"seen_window": torch.from_numpy(np.repeat(np.arange(len(idx)), lens)).to(device),
                "seen_item": torch.from_numpy(items[at].astype(np.int64)).to(device),
                "seen_first": torch.from_numpy(first[at]).to(device), "place": place[torch.from_numpy(idx)].to(device)}

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(len(self.seq))
        if self.world > 1:  # the permutation is shared (same seed); negatives are drawn per process
            perm = np.resize(perm, self.n_positives * self.world)[self.rank::self.world]
            rng = np.random.default_rng([self.seed, self.epoch, 1 + self.rank])
        self.epoch += 1
        self.samples = len(perm)
        if self.trim:
            groups = self._buckets(perm)
            groups = [groups[i] for i in rng.permutation(len(groups))]
        else:
            groups = [perm[s:s + self.batch_size] for s in range(0, len(perm), self.batch_size)]
        batches = (self._batch(torch.from_numpy(g), rng) for g in groups)
        yield from chunked(batches, self.chunk)
