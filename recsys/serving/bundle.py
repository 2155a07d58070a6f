"""A served model's answers: a scorer (recsys/scoring.py) and its tables (tables.py), in raw ids.

- rows with `user`: the top-k unseen items per user; a cold user (recsys/data/known.py: an unknown id,
  or one the model cannot score) gets the popularity ranking (`fallback = popularity`);
- rows with `user` and `item`: one score per row, a cold pair answered as evaluation answers it
  (scoring.pair_scores: a damped item mean or the global mean, a popularity share or 0), named in `fallback`;
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
from recsys.scoring import load_scorer, pair_scores
from recsys.serving import requests
from recsys.serving.tables import Tables

BLOCK_USERS = 4096  # users ranked per block in batch recommendation


class Bundle:
    def __init__(self, checkpoint: str | Path, serving_dir: str | Path):
        self.module = load_scorer(checkpoint)
        self.tables = Tables(serving_dir)
        self.known = self.tables.known  # what is known of each user after every split
        self.module.model.set_known(self.known)  # a model that reads a history reads all of it
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

    def _popular(self, k: int) -> np.ndarray:
        """The popularity top-k of a user nothing is known of (ranked as a cold user is, nothing excluded)."""
        return self.known.ranking_fallback().topk(min(k, len(self.item_raw))).indices.numpy()

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
                top = self._popular(k)
                out = pd.DataFrame({"user": user, "rank": np.arange(1, len(top) + 1), "item": self.item_raw[top],
                                    "score": self.known.popularity_share(top), "fallback": "popularity"})
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
        i = self.tables.item_index.get_indexer(pd.Index(items))
        score, fallback = pair_scores(self.module, self.known, self.user_index.get_indexer(pd.Index(users)), i)
        return self.tables.describe(pd.DataFrame({"user": users, "item": items, "score": score, "fallback": fallback}), i)

    def recommend(self, users: list[str], k: int = 10) -> pd.DataFrame:
        """Top-k unseen items per user, best first: each block of users scored once (scores and ranking
        from the same pass)."""
        u = self.user_index.get_indexer(pd.Index(users))
        kk = min(k, len(self.item_raw))
        top = np.zeros((len(users), kk), dtype=np.int64)
        score = np.zeros((len(users), kk), dtype=np.float64)
        valid = np.zeros((len(users), kk), dtype=bool)
        cold = self.known.cold(u, self.module.model.answers_histories)
        known = np.flatnonzero(u >= 0)
        for s in range(0, len(known), BLOCK_USERS):
            rows = known[s:s + BLOCK_USERS]
            items, raw, ok = ranking.top_k(self.module.model, u[rows], self.known.items, len(self.item_raw), kk,
                                           fallback=self.known.ranking_fallback(), cold=cold[rows])
            top[rows], valid[rows] = items, ok
            score[rows] = np.where(cold[rows, None], self.known.popularity_share(items),
                                   self.module.predictions(torch.as_tensor(raw)).double().numpy())
        unknown = np.flatnonzero(u < 0)
        if len(unknown):
            top[unknown], valid[unknown] = self._popular(kk), True
            score[unknown] = self.known.popularity_share(top[unknown])
        r, c = np.nonzero(valid)
        out = pd.DataFrame({"user": np.asarray(users, dtype=object)[r], "rank": c + 1, "item": self.item_raw[top[r, c]],
                            "score": score[r, c], "fallback": np.where(cold[r], "popularity", "")})
        return self.tables.describe(out, top[r, c])
