"""The tables a served model answers with, in raw MovieLens ids: written beside its checkpoint at
training time (`export`) and read back when it is served (`Tables`).

id maps (users.parquet, items.parquet with titles / years / genres) and what is known of each user after
every split (recsys/data/known.py: their items in recorded order, whether they trained, popularity,
damped item means and the train mean rating), so a served model answers as evaluation scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import ranking
from recsys.data import known as known_
from recsys.schema import GENRES, RAW_ID, TITLE, YEAR


def export(data, folder: Path) -> Path:
    """The serving tables of a prepared dataset, into `folder` (created)."""
    (folder := Path(folder)).mkdir(parents=True, exist_ok=True)
    pd.DataFrame({RAW_ID: data.users[RAW_ID].astype(str)}).to_parquet(folder / "users.parquet", index=False)
    items = pd.DataFrame({RAW_ID: data.items[RAW_ID].astype(str)})
    for col in (TITLE, YEAR, GENRES):
        if col in data.items:
            items[col] = data.items[col].astype("string") if col != YEAR else data.items[col].astype("Int64")
    items.to_parquet(folder / "items.parquet", index=False)
    known = known_.before(data, None)
    np.savez_compressed(folder / "tables.npz", seen_indptr=known.items.indptr, seen_indices=known.items.indices,
                        trained=known.trained, popularity=known.popularity, item_mean=known.item_mean)
    (folder / "serving.json").write_text(json.dumps({"task": data.meta["task"], "global_mean": known.global_mean,
                                                     "dataset": data.meta.get("name", ""),
                                                     "content_hash": data.meta["content_hash"],
                                                     "history_splits": list(known_.SPLITS)}))
    return folder


class Tables:
    """`export`'s tables, loaded: id indexes, what is known of each user (`known`), item descriptions."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.meta = json.loads((folder / "serving.json").read_text())
        self.task = self.meta["task"]
        self.user_index = pd.Index(pd.read_parquet(folder / "users.parquet")[RAW_ID].astype(str))
        self.items = pd.read_parquet(folder / "items.parquet")
        self.item_raw = self.items[RAW_ID].astype(str).to_numpy()
        self.item_index = pd.Index(self.item_raw)
        t = np.load(folder / "tables.npz")
        self.known = known_.Known(items=ranking.CSR(t["seen_indptr"], t["seen_indices"]), trained=t["trained"],
                                  popularity=t["popularity"], item_mean=t["item_mean"],
                                  global_mean=float(self.meta["global_mean"]), task=self.task)
        # titles, years, genres as objects, None where missing (JSON null, never NaN or <NA>), once
        self.described = {col: self.items[col].astype(object).where(self.items[col].notna(), None).to_numpy()
                          for col in (TITLE, YEAR, GENRES) if col in self.items}

    def describe(self, out: pd.DataFrame, item_codes: np.ndarray) -> pd.DataFrame:
        """Titles, years and genres beside each item (empty for unknown items)."""
        codes = np.asarray(item_codes)
        ok = codes >= 0
        for col, known in self.described.items():
            values = np.full(len(out), None, dtype=object)
            values[ok] = known[codes[ok]]
            out[col] = values
        return out
