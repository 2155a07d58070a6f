"""What is known about each user before a split: the one definition evaluation, the blend's fit,
training's validation, serving and `recommend` ask (DESIGN principle 12), never rebuild.

Before `val`: the train interactions; before `test`: train + val; served (`split=None`): every split.
From that:

- `items`: each user's known items in the order prepare recorded (timestamp, then the split's tie rule),
  most recent last. They are never ranked for the user, and they are the history a model that reads
  one scores from (sequence models: the latest `max_len`; item-item models: all of them).
- `cold(users, from_history)`: a user the model cannot score. A model that scores from a history alone
  (sequence and item-item models, a blend of them) needs a non-empty history; any other model needs the
  user in train (its user parameters were learned there); an id the data does not hold is cold for all.
- the cold-start answer, for both tasks: ranking by training popularity (`ranking_fallback`, the count
  that orders; `popularity_share`, the served score); a rating pair of a cold user or an item with no
  training rating gets the item's damped mean rating (the training mean for an item never rated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys import baselines, ranking
from recsys.schema import ITEM, POSITION, RATING, USER

SPLITS = ("train", "val", "test")  # in order; all of them: what a served model knows of each user


@dataclass
class Known:
    items: ranking.CSR  # [n_users] each user's known items, in recorded order (most recent last)
    trained: np.ndarray  # [n_users] bool: the user has training interactions
    popularity: np.ndarray  # [n_items] float64 training interactions per item
    item_mean: np.ndarray  # [n_items] float64 damped mean training rating (the training mean if never rated)
    global_mean: float  # the training mean rating
    task: str

    @property
    def n_users(self) -> int:
        return len(self.trained)

    def cold(self, users: np.ndarray, from_history: bool) -> np.ndarray:
        """[len(users)] bool; a negative id (unknown to the data) is always cold."""
        users = np.asarray(users, dtype=np.int64)
        out = np.ones(len(users), dtype=bool)
        ok = users >= 0
        out[ok] = self.items.counts(users[ok]) == 0 if from_history else ~self.trained[users[ok]]
        return out

    def ranking_fallback(self) -> torch.Tensor:
        """[n_items] what a cold user is ranked by: training counts (exact in float32 below 2^24)."""
        return torch.as_tensor(self.popularity, dtype=torch.float32)

    def popularity_share(self, items: np.ndarray) -> np.ndarray:
        """The served score of a cold user's item: its training count over the most popular item's."""
        return self.popularity[items] / max(float(self.popularity.max(initial=0.0)), 1.0)

    def rating_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`cold_rating`'s rule as tables for known ids, for training's validation: (untrained user [n_users],
        unrated item [n_items], the item's damped mean [n_items] float32)."""
        return (torch.as_tensor(~self.trained), torch.as_tensor(self.popularity == 0),
                torch.as_tensor(self.item_mean, dtype=torch.float32))

    def cold_rating(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cold [n] bool, their answer [n]): rating pairs of a cold user (or unknown id) or of an item with
        no training rating (or unknown id), answered with the item's damped mean rating."""
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        item_ok = items >= 0
        cold = self.cold(users, from_history=False) | ~item_ok
        cold[item_ok] |= self.popularity[items[item_ok]] == 0
        answer = np.full(len(items), self.global_mean)
        answer[item_ok] = self.item_mean[items[item_ok]]
        return cold, answer

    def histories(self, max_len: int) -> torch.Tensor:
        """[n_users, max_len] the latest `max_len` known items of each user, codes + 1, left-padded with 0
        (the last column is the latest item)."""
        ip, idx = self.items.indptr, self.items.indices
        counts = np.diff(ip)
        users = np.repeat(np.arange(self.n_users), counts)
        from_end = ip[1:][users] - np.arange(len(idx))  # 1 for the latest item of each user
        keep = from_end <= max_len
        out = np.zeros((self.n_users, max_len), dtype=np.int64)
        out[users[keep], max_len - from_end[keep]] = idx[keep] + 1
        return torch.from_numpy(out)


def before(data, split: str | None) -> Known:
    """What is known about each user of a prepared dataset before `split` (`None`: after every split)."""
    tables = [data.split(s) for s in SPLITS[:SPLITS.index(split) if split else None]]
    col = lambda c: np.concatenate([t[c].to_numpy(np.int64) for t in tables])  # noqa: E731
    tr = data.train
    u, i, r = tr[USER].to_numpy(np.int64), tr[ITEM].to_numpy(np.int64), tr[RATING].to_numpy(np.float64)
    return Known(items=ranking.CSR.build(col(USER), col(ITEM), data.n_users, within=col(POSITION)),  # in order
                 trained=np.bincount(u, minlength=data.n_users) > 0, popularity=baselines.item_counts(i, data.n_items),
                 item_mean=baselines.damped_item_means(i, r, data.n_items), global_mean=float(r.mean()),
                 task=data.meta["task"])
