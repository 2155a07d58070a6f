"""What a served model answers with: a scorer plus the few tables serving needs, in raw MovieLens ids.

`export(data, folder)` writes those tables at training time (id maps, titles/years/genres, each user's
seen items over train, val AND test: `history_splits` in serving.json; popularity and item means from
train); `Bundle` loads them beside the checkpoint and answers:
- rows with `user`: the top-k unseen items per user; an unknown user gets the popularity ranking;
- rows with `user` and `item`: one score per row (a rating, or P(positive)); an unknown user gets the
  item's fallback (damped item mean, or popularity share), an unknown item the global mean or 0; flagged.
Bad requests raise RecsysError with one line; the pyfunc turns it into an HTTP 400 (docs/serving.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys import baselines, ranking
from recsys.errors import RecsysError
from recsys.schema import GENRES, ITEM, RATING, RAW_ID, TITLE, USER, YEAR
from recsys.scoring import load_scorer

BLOCK_USERS = 4096  # users ranked per block in batch recommendation
HISTORY = "history"  # a request column: an anonymous user's recent items (sequence models)
MAX_ROWS = 10_000  # rows per request (users, or user-item pairs): more is refused in one line
MAX_RESULTS = 1_000_000  # rows an answer may hold (users x k): more is refused before anything is scored
HISTORY_SPLITS = ("train", "val", "test")  # what a served model knows of each user (seen items; sequence histories)


def _is_nan(value) -> bool:  # a float NaN (an empty cell)
    return isinstance(value, float) and value != value


def export(data, folder: Path) -> Path:
    """The serving tables of a prepared dataset, into `folder` (created)."""
    (folder := Path(folder)).mkdir(parents=True, exist_ok=True)
    pd.DataFrame({RAW_ID: data.users[RAW_ID].astype(str)}).to_parquet(folder / "users.parquet", index=False)
    items = pd.DataFrame({RAW_ID: data.items[RAW_ID].astype(str)})
    for col in (TITLE, YEAR, GENRES):
        if col in data.items:
            items[col] = data.items[col].astype("string") if col != YEAR else data.items[col].astype("Int64")
    items.to_parquet(folder / "items.parquet", index=False)
    parts = [data.split(s) for s in HISTORY_SPLITS]
    u = np.concatenate([t[USER].to_numpy(np.int64) for t in parts])
    i = np.concatenate([t[ITEM].to_numpy(np.int64) for t in parts])
    seen = ranking.CSR.build(u, i, data.n_users)
    tr = data.train
    item, rating = tr[ITEM].to_numpy(np.int64), tr[RATING].to_numpy(np.float64)
    mean = float(rating.mean())
    np.savez_compressed(folder / "tables.npz", seen_indptr=seen.indptr, seen_indices=seen.indices,
                        popularity=baselines.item_counts(item, data.n_items),
                        item_mean=baselines.damped_item_means(item, rating, data.n_items))
    (folder / "serving.json").write_text(json.dumps({"task": data.meta["task"], "global_mean": mean,
                                                     "dataset": data.meta.get("name", ""),
                                                     "content_hash": data.meta["content_hash"],
                                                     "history_splits": list(HISTORY_SPLITS)}))
    return folder


class Bundle:
    def __init__(self, checkpoint: str | Path, serving_dir: str | Path):
        folder = Path(serving_dir)
        self.module = load_scorer(checkpoint)
        self.meta = json.loads((folder / "serving.json").read_text())
        self.task = self.meta["task"]
        self.user_index = pd.Index(pd.read_parquet(folder / "users.parquet")[RAW_ID].astype(str))
        self.items = pd.read_parquet(folder / "items.parquet")
        self.item_raw = self.items[RAW_ID].astype(str).to_numpy()
        self.item_index = pd.Index(self.item_raw)
        t = np.load(folder / "tables.npz")
        self.seen, self.popularity, self.item_mean = ranking.CSR(t["seen_indptr"], t["seen_indices"]), t["popularity"], t["item_mean"]
        self.pop_order = np.argsort(-self.popularity, kind="stable")
        # titles, years, genres as objects, None where missing (JSON null, never NaN or <NA>), once
        self.described = {col: self.items[col].astype(object).where(self.items[col].notna(), None).to_numpy()
                          for col in (TITLE, YEAR, GENRES) if col in self.items}

    def share(self, items: np.ndarray) -> np.ndarray:  # popularity over the top item's: implicit fallback
        return (self.popularity[items] / max(self.popularity.max(), 1.0)).astype(np.float64)

    # --- requests --------------------------------------------------------------------------------
    @staticmethod
    def parse_k(value) -> int:
        if isinstance(value, bool):
            raise RecsysError(f"k={value!r} must be a positive integer")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise RecsysError(f"k={value!r} must be a positive integer") from None
        if f != f or not f.is_integer() or f <= 0:
            raise RecsysError(f"k={value!r} must be a positive integer")
        return int(f)

    @staticmethod
    def ids(df: pd.DataFrame, col: str) -> list[str]:
        """Raw ids as strings; a null, a list or a fraction is refused naming its row (server and recommend)."""
        values = df[col]
        out = []
        for row, v in enumerate(values):  # raw ids arrive as strings or JSON numbers (1 and 1.0 both mean "1")
            if isinstance(v, (list, tuple, dict, set, np.ndarray)) or isinstance(v, (bool, np.bool_)):
                raise RecsysError(f"`{col}` in row {row} is a {type(v).__name__}, not an id; send one string or "
                                  f"integer {col} id per row")
            if v is None or v is pd.NA or (isinstance(v, float) and v != v):
                raise RecsysError(f"`{col}` is null in row {row}; every row needs a {col} id")
            if isinstance(v, (float, np.floating)) and float(v).is_integer():
                v = int(v)
            elif isinstance(v, (float, np.floating)):
                raise RecsysError(f"`{col}` in row {row} is {v!r}, not an id; send string or integer ids")
            out.append(str(v))
        return out

    @staticmethod
    def _table(obj) -> pd.DataFrame:
        """The request as rows. MLflow hands a DataFrame for dataframe_split / dataframe_records / CSV, and
        for `inputs` / `instances` a dict of numpy arrays (columns) or a list of dicts of 0-d arrays (rows)."""
        if isinstance(obj, pd.DataFrame):
            return obj

        def scalar(v):
            return v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v

        if isinstance(obj, dict):
            bad = [c for c, v in obj.items() if not (isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim >= 1))]
            if bad:
                raise RecsysError(f"the input's column {str(bad[0])[:40]!r} is not a list of ids; send each column as a "
                                  "list, or rows (dataframe_split, dataframe_records, or CSV with a header)")
            obj = {c: list(v) for c, v in obj.items()}
        elif isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
            obj = [{c: scalar(v) for c, v in r.items()} for r in obj]
        try:
            return pd.DataFrame(obj)
        except (ValueError, TypeError) as e:
            raise RecsysError(f"the input is not a table of rows ({str(e).splitlines()[0][:120]}); send "
                              "dataframe_split, dataframe_records, or CSV with a header") from None

    def predict(self, df: pd.DataFrame, k=10) -> pd.DataFrame:
        df = self._table(df)
        if not isinstance(df.index, pd.RangeIndex):  # {"inputs": {"user": {"a": 1}}}: a mapping, not rows
            raise RecsysError("the input is a mapping, not rows; send a list of rows (dataframe_split, "
                              "dataframe_records, or inputs as a list), or CSV with a header")
        if len(df) > MAX_ROWS:
            raise RecsysError(f"the request has {len(df):,} rows; at most {MAX_ROWS:,} are answered at once: split it "
                              "(or use the recommend entry point for every user)")
        if "user" not in df.columns and HISTORY in df.columns:  # anonymous sessions: each row its recent items
            missing = np.flatnonzero(df[HISTORY].map(lambda v: v is None or _is_nan(v)).to_numpy())
            if len(missing):
                raise RecsysError(f"`history` is null in row {missing[0]} and the input has no `user`; send each "
                                  "anonymous row's recent items, or a `user` column")
            df = df.assign(user="")  # anonymous
        if "user" not in df.columns:
            raise RecsysError(f"the input has columns {[str(c)[:20] for c in df.columns[:5]]} but no `user`; send rows "
                              "with a user id (and an item id to score a pair), or a `history` of item ids")
        users = self.ids(df, "user")
        if HISTORY in df.columns and df[HISTORY].map(lambda v: v is not None and not _is_nan(v)).any():
            if "item" in df.columns and df["item"].notna().any():
                raise RecsysError("send either `item` (score pairs) or `history` (recommend from it), not both")
            k = self.parse_k(k)
            if len(users) * min(k, len(self.item_raw)) > MAX_RESULTS:
                raise RecsysError(f"{len(users):,} users x k={k} would return more than {MAX_RESULTS:,} rows; lower "
                                  "k or send fewer users per request")
            return self.recommend_rows(users, list(df[HISTORY]), k)
        if "item" in df.columns and df["item"].notna().any():
            return self.predict_pairs(users, self.ids(df, "item"))
        k = self.parse_k(k)
        if len(users) * min(k, len(self.item_raw)) > MAX_RESULTS:
            raise RecsysError(f"{len(users):,} users x k={k} would return more than {MAX_RESULTS:,} rows; lower k or "
                              "send fewer users per request")
        return self.recommend(users, k)

    def _history(self, value, row: int) -> list[str] | None:
        """A row's `history`: raw item ids, most recent last (None: the user's stored history)."""
        if value is None or _is_nan(value):
            return None
        if isinstance(value, str):  # a CSV cell: ids separated by spaces, commas or '|'
            value = [v for v in value.replace(",", " ").replace("|", " ").split() if v]
        elif isinstance(value, (int, np.integer, float, np.floating)) and not isinstance(value, (bool, np.bool_)):
            value = [value]  # one id: a CSV cell "10" reaches the model as a number, and is a one-item history
        if not isinstance(value, (list, tuple, np.ndarray)):
            raise RecsysError(f"`history` in row {row} is a {type(value).__name__}, not a list of item ids; send the "
                              "user's recent items, most recent last")
        out = []
        for v in (value.tolist() if isinstance(value, np.ndarray) else value):
            if isinstance(v, (list, tuple, dict, np.ndarray, bool)) or v is None or (isinstance(v, float) and (
                    v != v or not v.is_integer())):
                raise RecsysError(f"`history` in row {row} holds {v!r}, not an item id; send string or integer ids")
            out.append(str(int(v)) if isinstance(v, float) else str(v))
        return out

    def recommend_rows(self, users: list[str], histories: list, k: int) -> pd.DataFrame:
        """Top-k for rows that may carry a `history` (raw values, checked here): the served model's
        answer, and batch `recommend`'s for a users file with a history column (no request caps there)."""
        if not getattr(self.module.model, "uses_history", False):
            raise RecsysError("`history` is read by the sequence models (sasrec, gru4rec); this model "
                              "recommends from the user id alone: drop the column")
        return self.recommend_from_histories(users, [self._history(v, row) for row, v in enumerate(histories)], k)

    def recommend_from_histories(self, users: list[str], histories: list[list[str] | None], k: int) -> pd.DataFrame:
        """Top-k per row from the items it sends (an anonymous user's recent history, most recent last):
        unknown ids are dropped and counted (`history_dropped`), the history's items are not recommended,
        and a history with no known item gets the popularity ranking (`fallback = popularity`). A row
        without a history is answered from its user's stored history."""
        model, n_items = self.module.model, len(self.item_raw)
        kk = min(k, n_items)
        frames = []
        for user, hist in zip(users, histories):
            if hist is None:
                frames.append(self.recommend([user], k).assign(history_dropped=0))
                continue
            codes = self.item_index.get_indexer(pd.Index(hist)) if hist else np.zeros(0, dtype=np.int64)
            known = codes[codes >= 0]
            dropped = len(codes) - len(known)
            if not len(known):
                top = self.pop_order[:kk]
                score = self.share(top)
                fallback = "popularity"
            else:
                seq = np.zeros((1, model.max_len), dtype=np.int64)
                tail = known[-model.max_len:]
                seq[0, model.max_len - len(tail):] = tail + 1
                with torch.no_grad():
                    raw = model.score_sequences(torch.as_tensor(seq))[0].float()
                watched = np.unique(known)
                raw[torch.as_tensor(watched)] = -torch.inf  # never what they just watched
                left = n_items - len(watched)
                top = raw.topk(min(kk, left)).indices.numpy()
                score = torch.sigmoid(raw[torch.as_tensor(top)]).double().numpy()
                fallback = ""
            out = pd.DataFrame({"user": user, "rank": np.arange(1, len(top) + 1), "item": self.item_raw[top],
                                "score": score, "fallback": fallback, "history_dropped": dropped})
            frames.append(self._describe(out, top))
        return pd.concat(frames, ignore_index=True)

    def predict_pairs(self, users: list[str], items: list[str]) -> pd.DataFrame:
        u = self.user_index.get_indexer(pd.Index(users))
        i = self.item_index.get_indexer(pd.Index(items))
        known = (u >= 0) & (i >= 0)
        score = np.empty(len(users), dtype=np.float64)
        if known.any():
            with torch.no_grad():
                score[known] = self.module(torch.as_tensor(u[known]), torch.as_tensor(i[known])).double().numpy()
        fallback = np.full(len(users), "", dtype=object)
        item_only = (u < 0) & (i >= 0)
        if self.task == "rating":
            score[item_only] = self.item_mean[i[item_only]]
            fallback[item_only] = "item_mean"
            score[i < 0] = self.meta["global_mean"]
        else:
            score[item_only] = self.share(i[item_only])
            fallback[item_only] = "popularity"
            score[i < 0] = 0.0
        fallback[i < 0] = "global_mean" if self.task == "rating" else "unknown_item"
        out = pd.DataFrame({"user": users, "item": items, "score": score, "fallback": fallback})
        return self._describe(out, i)

    def recommend(self, users: list[str], k: int = 10) -> pd.DataFrame:
        """Top-k unseen items per user, best first; blocks of users scored at once."""
        u = self.user_index.get_indexer(pd.Index(users))
        n_items = len(self.item_raw)
        kk = min(k, n_items)
        known = np.flatnonzero(u >= 0)
        top = np.zeros((len(users), kk), dtype=np.int64)
        valid = np.zeros((len(users), kk), dtype=bool)
        for s in range(0, len(known), BLOCK_USERS):
            rows = known[s:s + BLOCK_USERS]
            _, tops = ranking.rank_targets(self.module.model, u[rows], np.full((len(rows), 1), -1), self.seen,
                                           n_items, k=kk)
            top[rows] = tops
            left = n_items - self.seen.counts(u[rows])  # unseen items per user: all that can be returned
            valid[rows] = np.arange(kk)[None, :] < left[:, None]
        cold = np.flatnonzero(u < 0)
        if len(cold):
            top[cold] = self.pop_order[:kk]
            valid[cold] = True
        r, c = np.nonzero(valid)
        items = top[r, c]
        score = np.empty(len(r), dtype=np.float64)
        warm = u[r] >= 0
        if warm.any():
            with torch.no_grad():
                score[warm] = self.module(torch.as_tensor(u[r][warm]), torch.as_tensor(items[warm])).double().numpy()
        if (~warm).any():
            score[~warm] = (self.item_mean[items[~warm]] if self.task == "rating"
                            else self.share(items[~warm]))
        rows_user = np.asarray(users, dtype=object)[r]
        rows_fb = np.where(warm, "", "popularity")
        out = pd.DataFrame({"user": rows_user, "rank": c + 1, "item": self.item_raw[items], "score": score,
                            "fallback": rows_fb})
        return self._describe(out, items)

    def _describe(self, out: pd.DataFrame, item_codes: np.ndarray) -> pd.DataFrame:
        """Titles, years and genres beside each item (empty for unknown items)."""
        codes = np.asarray(item_codes)
        ok = codes >= 0
        for col, known in self.described.items():
            values = np.full(len(out), None, dtype=object)
            values[ok] = known[codes[ok]]
            out[col] = values
        return out
