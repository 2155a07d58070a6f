"""Side features as dense tensors aligned to the contiguous ids.

Users: continuous [age scaled to 0-1, gender 0/1]; categorical [occupation, zip prefix (3 digits)].
Items: continuous multi-hot genres; categorical [release year].
Categorical code 0 means unknown, so a cardinality is ``n_values + 1``. Features a dataset lacks are
simply absent (zero columns), and the models fall back to ids alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.schema import AGE, GENDER, GENRES, OCCUPATION, YEAR, ZIP


@dataclass
class FeatureTables:
    user_cont: np.ndarray  # [n_users, Cu] float32
    user_cat: np.ndarray  # [n_users, Ku] int64
    user_cards: list[int]
    item_cont: np.ndarray  # [n_items, Ci] float32
    item_cat: np.ndarray  # [n_items, Ki] int64
    item_cards: list[int]

    def spec(self) -> dict:
        """Plain values a model constructor takes (the tables themselves travel in its state_dict)."""
        return {"user_cont_dim": self.user_cont.shape[1], "user_cards": list(self.user_cards),
                "item_cont_dim": self.item_cont.shape[1], "item_cards": list(self.item_cards)}


def _codes(s: pd.Series) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(s.astype("string"), sort=True)
    return (codes + 1).astype(np.int64), len(uniques) + 1  # -1 (missing) -> 0


def build(users: pd.DataFrame, items: pd.DataFrame) -> FeatureTables:
    uc, ucat, ucards = [], [], []
    if AGE in users:
        age = pd.to_numeric(users[AGE], errors="coerce").astype("float64")
        lo, hi = age.min(), age.max()
        uc.append(((age - lo) / (hi - lo if hi > lo else 1)).fillna(0.5).to_numpy())
    if GENDER in users:
        uc.append((users[GENDER].astype("string") == "M").fillna(False).to_numpy(float))
    for col, fn in ((OCCUPATION, lambda s: s), (ZIP, lambda s: s.astype("string").str[:3])):
        if col in users:
            c, n = _codes(fn(users[col]))
            ucat.append(c)
            ucards.append(n)
    ic, icat, icards = [], [], []
    if GENRES in items:
        g = items[GENRES].astype("string").fillna("")
        vocab = sorted({x for s in g for x in s.split("|") if x})
        index = {x: j for j, x in enumerate(vocab)}
        mh = np.zeros((len(items), len(vocab)), dtype=np.float32)
        for r, s in enumerate(g):
            for x in s.split("|"):
                if x:
                    mh[r, index[x]] = 1
        ic.extend(mh.T)
    if YEAR in items:
        c, n = _codes(items[YEAR])
        icat.append(c)
        icards.append(n)

    def stack(cols, n, dtype):
        return np.stack(cols, 1).astype(dtype) if cols else np.zeros((n, 0), dtype)

    return FeatureTables(stack(uc, len(users), np.float32), stack(ucat, len(users), np.int64), ucards,
                         stack(ic, len(items), np.float32), stack(icat, len(items), np.int64), icards)
