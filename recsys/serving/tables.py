"""The tables a served model answers with, in raw MovieLens ids: written beside its checkpoint at
training time (`export`) and read back when it is served (`Tables`).

id maps (users.parquet, items.parquet with titles / years / genres), each user's seen items over every
split (`history.HISTORY_SPLITS`, named in serving.json), popularity and damped item means from train,
and the train mean rating.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import baselines, ranking
from recsys.data import history
from recsys.schema import GENRES, ITEM, RATING, RAW_ID, TITLE, USER, YEAR


def export(data, folder: Path) -> Path:
    """The serving tables of a prepared dataset, into `folder` (created)."""
    (folder := Path(folder)).mkdir(parents=True, exist_ok=True)
    pd.DataFrame({RAW_ID: data.users[RAW_ID].astype(str)}).to_parquet(folder / "users.parquet", index=False)
    items = pd.DataFrame({RAW_ID: data.items[RAW_ID].astype(str)})
    for col in (TITLE, YEAR, GENRES):
        if col in data.items:
            items[col] = data.items[col].astype("string") if col != YEAR else data.items[col].astype("Int64")
    items.to_parquet(folder / "items.parquet", index=False)
    parts = history.before(data)
    u = np.concatenate([t[USER].to_numpy(np.int64) for t in parts])
    i = np.concatenate([t[ITEM].to_numpy(np.int64) for t in parts])
    seen = ranking.CSR.build(u, i, data.n_users)
    tr = data.train
    item, rating = tr[ITEM].to_numpy(np.int64), tr[RATING].to_numpy(np.float64)
    np.savez_compressed(folder / "tables.npz", seen_indptr=seen.indptr, seen_indices=seen.indices,
                        popularity=baselines.item_counts(item, data.n_items),
                        item_mean=baselines.damped_item_means(item, rating, data.n_items))
    (folder / "serving.json").write_text(json.dumps({"task": data.meta["task"], "global_mean": float(rating.mean()),
                                                     "dataset": data.meta.get("name", ""),
                                                     "content_hash": data.meta["content_hash"],
                                                     "history_splits": list(history.HISTORY_SPLITS)}))
    return folder


class Tables:
    """`export`'s tables, loaded: id indexes, seen items, popularity, item means, item descriptions."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.meta = json.loads((folder / "serving.json").read_text())
        self.task = self.meta["task"]
        self.user_index = pd.Index(pd.read_parquet(folder / "users.parquet")[RAW_ID].astype(str))
        self.items = pd.read_parquet(folder / "items.parquet")
        self.item_raw = self.items[RAW_ID].astype(str).to_numpy()
        self.item_index = pd.Index(self.item_raw)
        t = np.load(folder / "tables.npz")
        self.seen = ranking.CSR(t["seen_indptr"], t["seen_indices"])
        self.popularity, self.item_mean = t["popularity"], t["item_mean"]
        self.pop_order = np.argsort(-self.popularity, kind="stable")
        # titles, years, genres as objects, None where missing (JSON null, never NaN or <NA>), once
        self.described = {col: self.items[col].astype(object).where(self.items[col].notna(), None).to_numpy()
                          for col in (TITLE, YEAR, GENRES) if col in self.items}

    def cold_score(self, items: np.ndarray) -> np.ndarray:
        """What a user the model does not know gets for known `items`: the damped item mean (ratings), or
        the item's popularity over the most popular item's (implicit)."""
        if self.task == "rating":
            return self.item_mean[items].astype(np.float64)
        return (self.popularity[items] / max(self.popularity.max(), 1.0)).astype(np.float64)

    def describe(self, out: pd.DataFrame, item_codes: np.ndarray) -> pd.DataFrame:
        """Titles, years and genres beside each item (empty for unknown items)."""
        codes = np.asarray(item_codes)
        ok = codes >= 0
        for col, known in self.described.items():
            values = np.full(len(out), None, dtype=object)
            values[ok] = known[codes[ok]]
            out[col] = values
        return out
