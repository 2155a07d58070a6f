"""Negative sampling, vectorised over all users at once.

Both samplers test membership with a sorted array of ``user * n_items + item`` keys and
``np.searchsorted``: no per-user Python sets, no loops over users except for the rare user who has
so few unseen items that rejection sampling stalls.
"""

from __future__ import annotations

import numpy as np

from recsys.errors import RecsysError


def sorted_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted distinct ``user * n_items + item`` keys (sort + mask: several times faster than np.unique's
    hash path on tens of millions of int64 keys)."""
    keys = np.sort(np.asarray(users, dtype=np.int64) * n_items + items)
    if len(keys) < 2:
        return keys
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])]


def _is_seen(users: np.ndarray, items: np.ndarray, n_items: int, seen_keys: np.ndarray) -> np.ndarray:
    keys = users.astype(np.int64) * n_items + items
    pos = np.searchsorted(seen_keys, keys)
    pos[pos == len(seen_keys)] = 0
    return seen_keys[pos] == keys if len(seen_keys) else np.zeros(len(keys), bool)


def sample_eval_negatives(users: np.ndarray, n_items: int, k: int, seen_keys: np.ndarray,
                          rng: np.random.Generator, raw_ids=None) -> np.ndarray:
    """[len(users), k] items per user: distinct, never seen by that user; drawn once, seeded. `raw_ids`
    (code -> the dataset's user id) names a user in the dataset's own words."""
    users = np.asarray(users, dtype=np.int64)
    seen_per_user = np.bincount((seen_keys // n_items).astype(np.int64), minlength=int(users.max(initial=0)) + 1)
    short = users[n_items - seen_per_user[users] < k]
    if len(short):
        who = raw_ids[short[0]] if raw_ids is not None else short[0]
        most = int(n_items - seen_per_user[users].max())
        raise RecsysError(f"user {who} (the dataset's id) has {n_items - seen_per_user[short[0]]} unseen items, fewer than "
                          f"eval_negatives={k} ({len(short):,} of {len(users):,} users are short); lower eval_negatives to at most "
                          f"{max(most, 0)}, or 0 to skip the sampled protocol")
    out = np.full((len(users), k), -1, dtype=np.int64)
    todo = np.arange(len(users))
    for _ in range(4):
        if not len(todo):
            break
        m = 2 * k + 8
        cand = rng.integers(0, n_items, (len(todo), m))
        u = np.repeat(users[todo], m)
        ok = ~_is_seen(u, cand.reshape(-1), n_items, seen_keys).reshape(len(todo), m)
        # drop within-row duplicates, keeping each item's first draw (stable sort keeps draw order)
        order = np.argsort(cand, axis=1, kind="stable")
        s = np.take_along_axis(cand, order, 1)
        dup_sorted = np.zeros_like(s, dtype=bool)
        dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
        dup = np.empty_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, 1)
        ok &= ~dup
        enough = ok.sum(1) >= k
        rows = todo[enough]
        # the first k valid draws of each row, in draw order
        rank = np.cumsum(ok[enough], 1)
        pick = ok[enough] & (rank <= k)
        out[rows] = cand[enough][pick].reshape(-1, k)
        todo = todo[~enough]
    for r in todo:  # heavy users: exact draw from the complement
        seen = seen_keys[(seen_keys >= users[r] * n_items) & (seen_keys < (users[r] + 1) * n_items)] % n_items
        out[r] = rng.choice(np.setdiff1d(np.arange(n_items), seen), k, replace=False)
    return out


def sample_train_negatives(users: np.ndarray, n_items: int, seen_keys: np.ndarray,
                           rng: np.random.Generator | np.random.Generator) -> np.ndarray:
    """One item per entry of `users`, not among that user's training positives (with replacement)."""
    items = rng.integers(0, n_items, len(users))
    bad = np.flatnonzero(_is_seen(users, items, n_items, seen_keys))
    for _ in range(100):
        if not len(bad):
            return items
        items[bad] = rng.integers(0, n_items, len(bad))
        bad = bad[_is_seen(users[bad], items[bad], n_items, seen_keys)]
    raise RecsysError("could not draw training negatives: some user has interacted with (almost) every item")
