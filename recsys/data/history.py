"""The training sequences of the sequence models: each user's train items in the order prepare recorded
(`position`: timestamp, then the split's tie rule), most recent last. What a model reads when it scores
(the history before a split) is recsys/data/known.py's.

- `windows(train, max_len)`: next-item training rows from train items only: every user's sequence cut
  from its end into windows of max_len + 1 items; inputs [W, max_len] and targets [W, max_len] (the
  item that followed each input position, 0 where there is none), left-padded alike, and each window's user.
- `seen(train, max_len)`: what a user had before each of those targets (`exclude_seen`): every train item's
  first place in its user's sequence, by user, and each window position's place.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from recsys.errors import RecsysError
from recsys.schema import ITEM, POSITION, USER

def _ordered(tables: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of the tables' rows, by user, then position."""
    df = pd.concat([t[[USER, ITEM, POSITION]] for t in tables if len(t)], ignore_index=True) if any(
        len(t) for t in tables) else pd.DataFrame({USER: [], ITEM: [], POSITION: []})
    order = np.lexsort((df[POSITION].to_numpy(), df[USER].to_numpy()))
    return df[USER].to_numpy(np.int64)[order], df[ITEM].to_numpy(np.int64)[order]


def _geometry(train: pd.DataFrame, max_len: int):
    """The windows of `windows`: (users, items) in order, each user's first row, and per window its user,
    the index within the user of its last target, and its number of targets."""
    users, items = _ordered([train])
    if not len(users):
        raise RecsysError("no training interactions to build sequences from")
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_targets = np.maximum(counts - 1, 0)  # targets per user: every item after the first
    per_user = -(-n_targets // max_len)  # windows per user (ceil)
    w_user = np.repeat(np.arange(len(counts)), per_user)
    w_rank = np.arange(len(w_user)) - np.repeat(np.cumsum(per_user) - per_user, per_user)  # 0 = the latest window
    # window r of a user covers targets ending at (count - 1 - r * max_len), counted within the user
    last_target = counts[w_user] - 1 - w_rank * max_len  # index within the user of the window's last target
    first_target = np.maximum(last_target - max_len + 1, 1)
    return users, items, starts, counts, w_user, last_target, last_target - first_target + 1


def windows(train: pd.DataFrame, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-item training rows from the train items, each user's sequence cut from its end into windows
    of max_len + 1 items (consecutive windows share one item: the last input of one is the first of the
    next), so every train item after a user's first is a target exactly once."""
    users, items, starts, _, w_user, last_target, length = _geometry(train, max_len)
    inputs = np.zeros((len(w_user), max_len), dtype=np.int64)
    targets = np.zeros((len(w_user), max_len), dtype=np.int64)
    for j in range(max_len):  # column j from the right: target index last_target - j, input one before it
        has = j < length
        t_idx = starts[w_user[has]] + last_target[has] - j
        targets[has, max_len - 1 - j] = items[t_idx] + 1
        inputs[has, max_len - 1 - j] = items[t_idx - 1] + 1
    return torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(w_user)


def seen(train: pd.DataFrame, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
    """What each user had before each target of `windows`, for a softmax that leaves those items out:
    (indptr, items, first) by user (CSR: user u's distinct items items[indptr[u]:indptr[u + 1]], first[k]
    the index of item k's first occurrence in u's sequence) and `place` [W, max_len], the index within
    its user of each window position's target (-1 where there is none), aligned with `windows`. An item
    was had before a target iff its first index is below the target's."""
    users, items, starts, counts, w_user, last_target, length = _geometry(train, max_len)
    index = np.arange(len(users)) - starts[users]  # place within the user
    order = np.lexsort((index, items, users))  # by user, item, then place: a pair's first row is its first place
    u, it, ix = users[order], items[order], index[order]
    first_row = np.ones(len(u), dtype=bool)
    first_row[1:] = (u[1:] != u[:-1]) | (it[1:] != it[:-1])
    u, it, ix = u[first_row], it[first_row], ix[first_row]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=len(counts)))])
    col = np.arange(max_len)[None, :]
    place = last_target[:, None] - (max_len - 1 - col)  # the target index at each column
    place = np.where(max_len - 1 - col < length[:, None], place, -1)
    return indptr, it, ix.astype(np.int32), torch.from_numpy(place.astype(np.int32))
