"""A served model's answers: a scorer (recsys/scoring.py) and its tables (tables.py), in raw ids.

- rows with `user`: the top-k unseen items per user; a user the model does not know gets the
  popularity ranking (`fallback = popularity`);
- rows with `user` and `item`: one score per row; an unknown user gets the item's cold score (damped item
  mean, or popularity share), an unknown item the global mean or 0; flagged in `fallback`;
- rows with a `history` (sequence models): the top-k from the items it sends.
Scores are the scorer's predictions: a rating, or for implicit data the sigmoid of the model's raw score
(a trained model's estimate of P(positive); for a blend, a squashed sum of standardised scores: a
ranking score). Bad requests raise RecsysError with one line (requests.py); the pyfunc turns it into an
HTTP 400 (docs/serving.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys import ranking
from recsys.errors import RecsysError
from recsys.scoring import load_scorer
from recsys.serving import requests
from recsys.serving.tables import Tables

BLOCK_USERS = 4096  # users ranked per block in batch recommendation


class Bundle:
    def __init__(self, checkpoint: str | Path, serving_dir: str | Path):
        self.module = load_scorer(checkpoint)
        self.tables = Tables(serving_dir)
        self.meta, self.task = self.tables.meta, self.tables.task
        self.user_index, self.item_raw = self.tables.user_index, self.tables.item_raw

    def predict(self, obj, k=10) -> pd.DataFrame:
        """The served model's answer to a request in any of MLflow's input formats, with its `k` param."""
        req = requests.parse(obj, k, len(self.item_raw))
        if req.kind == "pairs":
            return self.predict_pairs(req.users, req.items)
        if req.kind == "histories":
            return self.recommend_from_histories(req.users, req.histories, req.k)
        return self.recommend(req.users, req.k)

    def recommend_rows(self, users: list[str], histories: list, k: int) -> pd.DataFrame:
        """Top-k for rows that may carry a `history` (raw values, checked here): batch `recommend`'s answer
        for a users file with a history column (no request caps there)."""
        return self.recommend_from_histories(users, [requests.history(v, row) for row, v in enumerate(histories)], k)

    def _popular(self, user: str, k: int) -> tuple[pd.DataFrame, np.ndarray]:
        top = self.tables.pop_order[:min(k, len(self.item_raw))]
        return pd.DataFrame({"user": user, "rank": np.arange(1, len(top) + 1), "item": self.item_raw[top],
                             "score": self.tables.cold_score(top), "fallback": "popularity"}), top

    def recommend_from_histories(self, users: list[str], histories: list[list[str] | None], k: int) -> pd.DataFrame:
        """Top-k per row from the items it sends (an anonymous user's recent history, most recent last):
        unknown ids are dropped and counted (`history_dropped`), the history's items are not recommended,
        and a history with no known item gets the popularity ranking (`fallback = popularity`). A row
        without a history is answered from its user's stored history."""
        model, n_items = self.module.model, len(self.item_raw)
        if not model.answers_histories:
            raise RecsysError("`history` is read by the sequence and item-item models (sasrec, gru4rec, itemknn, "
                              "ease); this model can only recommend from the user id alone: drop the column")
        frames = []
        for user, hist in zip(users, histories):
            if hist is None:
                frames.append(self.recommend([user], k).assign(history_dropped=0))
                continue
            codes = self.tables.item_index.get_indexer(pd.Index(hist)) if hist else np.zeros(0, dtype=np.int64)
            known = codes[codes >= 0]
            if not len(known):
                out, top = self._popular(user, k)
            else:
                seq = np.zeros((1, model.max_len), dtype=np.int64)
                tail = known[-model.max_len:]
                seq[0, model.max_len - len(tail):] = tail + 1
                with torch.no_grad():
                    raw = model.score_sequences(torch.as_tensor(seq))[0].float()
                watched = np.unique(known)
                raw[torch.as_tensor(watched)] = -torch.inf  # never what they just watched
                best = raw.topk(min(k, n_items - len(watched)))
                top = best.indices.numpy()
                out = pd.DataFrame({"user": user, "rank": np.arange(1, len(top) + 1), "item": self.item_raw[top],
                                    "score": self.module.predictions(best.values).double().numpy(), "fallback": ""})
            frames.append(self.tables.describe(out.assign(history_dropped=len(codes) - len(known)), top))
        return pd.concat(frames, ignore_index=True)

    def predict_pairs(self, users: list[str], items: list[str]) -> pd.DataFrame:
        u = self.user_index.get_indexer(pd.Index(users))
        i = self.tables.item_index.get_indexer(pd.Index(items))
        known = (u >= 0) & (i >= 0)
        score = np.empty(len(users), dtype=np.float64)
        if known.any():
            with torch.no_grad():
                score[known] = self.module(torch.as_tensor(u[known]), torch.as_tensor(i[known])).double().numpy()
        fallback = np.full(len(users), "", dtype=object)
        item_only = (u < 0) & (i >= 0)
        score[item_only] = self.tables.cold_score(i[item_only])
        fallback[item_only] = "item_mean" if self.task == "rating" else "popularity"
        score[i < 0] = self.meta["global_mean"] if self.task == "rating" else 0.0
        fallback[i < 0] = "global_mean" if self.task == "rating" else "unknown_item"
        return self.tables.describe(pd.DataFrame({"user": users, "item": items, "score": score, "fallback": fallback}), i)

    def recommend(self, users: list[str], k: int = 10) -> pd.DataFrame:
        """Top-k unseen items per user, best first: each block of users scored once (scores and ranking
        from the same pass)."""
        u = self.user_index.get_indexer(pd.Index(users))
        kk = min(k, len(self.item_raw))
        top = np.zeros((len(users), kk), dtype=np.int64)
        score = np.zeros((len(users), kk), dtype=np.float64)
        valid = np.zeros((len(users), kk), dtype=bool)
        known = np.flatnonzero(u >= 0)
        for s in range(0, len(known), BLOCK_USERS):
            rows = known[s:s + BLOCK_USERS]
            items, raw, ok = ranking.top_k(self.module.model, u[rows], self.tables.seen, len(self.item_raw), kk)
            top[rows], valid[rows] = items, ok
            score[rows] = self.module.predictions(torch.as_tensor(raw)).double().numpy()
        cold = np.flatnonzero(u < 0)
        if len(cold):
            top[cold], valid[cold] = self.tables.pop_order[:kk], True
            score[cold] = self.tables.cold_score(self.tables.pop_order[:kk])
        r, c = np.nonzero(valid)
        out = pd.DataFrame({"user": np.asarray(users, dtype=object)[r], "rank": c + 1, "item": self.item_raw[top[r, c]],
                            "score": score[r, c], "fallback": np.where(u[r] >= 0, "", "popularity")})
        return self.tables.describe(out, top[r, c])
