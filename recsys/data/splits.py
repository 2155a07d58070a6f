"""How prepare orders and splits interactions: each history's order (timestamp, then the tie rule), the
random, temporal and leave_last_out splits, and duplicate (user, item) pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.schema import ITEM, RAW_ID, TIMESTAMP, USER


def item_order(items: pd.DataFrame) -> np.ndarray:
    """Rank of each item code with raw ids in numeric order where they are numbers (then the rest as text).

    Codes follow raw ids sorted as text ("99" after "1000"); the numeric order makes the `item_id` tie
    rule independent of how ids are spelt (zero-padded or not).
    """
    raw_ids = items[RAW_ID].astype(str)
    num = pd.to_numeric(raw_ids, errors="coerce").to_numpy(np.float64)
    isnan = np.isnan(num)
    order = np.lexsort((np.arange(len(items)), np.where(isnan, 0.0, num), isnan))
    rank = np.empty(len(items), dtype=np.int64)
    rank[order] = np.arange(len(items))
    return rank


def positions(df: pd.DataFrame, tie_key: np.ndarray) -> np.ndarray:
    """Each interaction's place in its user's history: by timestamp, then `tie_key` (the split's tie
    rule: the same order that picks leave_last_out's val and test)."""
    users = df[USER].to_numpy()
    order = np.lexsort((tie_key, df[TIMESTAMP].to_numpy(), users))
    starts = np.concatenate([[0], np.cumsum(np.bincount(users))])[users[order]]
    pos = np.empty(len(df), dtype=np.int32)
    pos[order] = np.arange(len(df)) - starts
    return pos


def split_labels(df: pd.DataFrame, split: str, val_frac: float, test_frac: float, rng, tie_key=None) -> tuple[np.ndarray, int]:
    """Per-row split label (0 train, 1 val, 2 test) and, for leave_last_out, the number of users whose
    held-out interactions were picked among timestamp ties."""
    n = len(df)
    label = np.zeros(n, dtype=np.int8)
    if split == "random":
        perm = rng.permutation(n)
        n_test, n_val = int(round(n * test_frac)), int(round(n * val_frac))
        label[perm[:n_test]] = 2
        label[perm[n_test:n_test + n_val]] = 1
        return label, 0
    if split == "temporal":
        # one global cutoff per boundary: no rating after the cutoff reaches train (no future leak)
        ts = np.sort(df[TIMESTAMP].to_numpy())
        t_val = ts[min(n - 1, int(n * (1 - val_frac - test_frac)))]
        t_test = ts[min(n - 1, int(n * (1 - test_frac)))]
        t = df[TIMESTAMP].to_numpy()
        label[t >= t_val] = 1
        label[t >= t_test] = 2
        return label, 0
    # leave_last_out: latest -> test, second latest -> val; interactions sharing a timestamp are
    # ordered by `tie_key` (a seeded random permutation, or the items' numeric id order)
    ts_all = df[TIMESTAMP].to_numpy()
    order = np.lexsort((tie_key, ts_all, df[USER].to_numpy()))
    users = df[USER].to_numpy()[order]
    ts = ts_all[order]
    counts = np.bincount(users)
    # position from the end within each user's chronological run
    ends = np.cumsum(counts)[users]
    from_end = ends - np.arange(n) - 1
    eligible = counts[users] >= 3  # users with < 3 interactions stay entirely in train
    lab = np.zeros(n, dtype=np.int8)
    test_pos = np.flatnonzero((from_end == 0) & eligible)
    lab[test_pos] = 2
    lab[test_pos - 1] = 1
    label[order] = lab
    # held-out pair decided by a tie: test ties val, or val ties the latest training interaction
    tied = (ts[test_pos] == ts[test_pos - 1]) | (ts[test_pos - 1] == ts[test_pos - 2])
    return label, int(tied.sum())


def drop_duplicates(inter: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep each (user, item) pair's latest interaction by timestamp (the later row on equal timestamps).

    Checked on integer keys first: datasets without duplicates (all of GroupLens') pay one sort.
    """
    u_codes, _ = pd.factorize(inter[USER])
    i_codes, i_uniq = pd.factorize(inter[ITEM])
    keys = u_codes.astype(np.int64) * max(1, len(i_uniq)) + i_codes
    s = np.sort(keys)
    if not (s[1:] == s[:-1]).any():
        return inter, 0
    order = np.lexsort((np.arange(len(inter)), inter[TIMESTAMP].to_numpy(), keys))
    ks = keys[order]
    last = np.ones(len(ks), dtype=bool)
    last[:-1] = ks[1:] != ks[:-1]
    keep = np.sort(order[last])
    return inter.iloc[keep].reset_index(drop=True), int(len(inter) - len(keep))
