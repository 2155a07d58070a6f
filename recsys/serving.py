"""A trained model plus the id maps it needs, answering in raw MovieLens ids (used by the pyfunc)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys import ranking
from recsys.data.prepare import load
from recsys.errors import RecsysError
from recsys.schema import ITEM, RAW_ID, USER
from recsys.scoring import load_scorer


class Bundle:
    def __init__(self, checkpoint: str | Path, data_dir: str | Path):
        self.module = load_scorer(checkpoint)
        data = load(Path(data_dir))
        self.meta = data.meta
        self.user_index = pd.Index(data.users[RAW_ID].astype(str))
        self.item_raw = data.items[RAW_ID].astype(str).to_numpy()
        self.item_index = pd.Index(self.item_raw)
        self.titles = data.items.get("title")
        tr = data.train
        self.seen = ranking.CSR.build(tr[USER].to_numpy(np.int64), tr[ITEM].to_numpy(np.int64), len(self.user_index))

    def _users(self, raw) -> np.ndarray:
        idx = self.user_index.get_indexer(pd.Index(list(raw)).astype(str))
        if (idx < 0).any():
            bad = [r for r, j in zip(raw, idx) if j < 0][:3]
            raise RecsysError(f"unknown user id(s) {bad}; use raw ids from the training data")
        return idx.astype(np.int64)

    def predict_pairs(self, users, items) -> pd.DataFrame:
        u = self._users(users)
        i = self.item_index.get_indexer(pd.Index(list(items)).astype(str))
        if (i < 0).any():
            raise RecsysError(f"unknown item id(s) {[r for r, j in zip(items, i) if j < 0][:3]}")
        with torch.no_grad():
            s = self.module(torch.as_tensor(u), torch.as_tensor(i.astype(np.int64))).numpy()
        return pd.DataFrame({"user": list(users), "item": list(items), "score": s})

    def recommend(self, users, k: int = 10) -> pd.DataFrame:
        """Top-k unseen items per user, best first."""
        u = self._users(users)
        n_items = len(self.item_raw)
        _, tops = ranking.rank_targets(self.module.model, u, np.full((len(u), 1), -1), self.seen, n_items, k=k)
        with torch.no_grad():
            scores = self.module(torch.as_tensor(np.repeat(u, tops.shape[1])), torch.as_tensor(tops.reshape(-1))).numpy()
        return pd.DataFrame({"user": np.repeat(list(users), tops.shape[1]), "rank": np.tile(np.arange(1, tops.shape[1] + 1), len(u)),
                             "item": self.item_raw[tops.reshape(-1)], "score": scores})


def load_checkpoint(checkpoint, data_dir) -> Bundle:
    return Bundle(checkpoint, data_dir)
