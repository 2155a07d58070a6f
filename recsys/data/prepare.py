"""Raw tables -> encoded, filtered, split data with stored evaluation negatives.

`prepare()` is pure (DataFrames in, `Prepared` out); `save()` writes it atomically; `load()` reads
it back, refusing it when any file changed (the hashes are recsys/data/hashes.py's: every file, so the
same seed gives the same hash and evaluation can refuse data that does not match a model).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data import parsers, sources, synthetic
from recsys.data.negatives import sample_eval_negatives, sorted_keys
from recsys.data.hashes import (FORMAT_VERSION, _json_default, content_hash, file_hashes, ids_hash,
                                verify_hashes)
from recsys.errors import RecsysError
from recsys.schema import ITEM, POSITION, RATING, RAW_ID, SPLITS, TIE_BREAKS, task_of, TIMESTAMP, USER

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Prepared:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    users: pd.DataFrame  # index = contiguous user id; raw_id + raw features
    items: pd.DataFrame
    negatives: pd.DataFrame | None  # long table (user, item): eval negatives, drawn once
    meta: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def split(self, name: str) -> pd.DataFrame:
        return getattr(self, name)


def load_raw(dataset: str, n_users=943, n_items=1682, n_ratings=100_000, seed=42) -> parsers.Raw:
    if dataset == "synthetic":
        with tempfile.TemporaryDirectory() as tmp:
            folder = synthetic.write_ml100k(Path(tmp), n_users, n_items, n_ratings, seed)
            return parsers.parse_ml100k(folder)
    path, _ = sources.resolve(dataset)
    if path.is_file():
        if path.suffix == ".zip":
            with tempfile.TemporaryDirectory() as tmp:
                dest = Path(tmp) / "x"
                sources.safe_extract(path, dest)
                return parsers.detect_and_parse(dest)
        if path.name == "ratings.csv" and (path.parent / "movies.csv").exists():
            return parsers.parse_movielens_csv(path.parent)
        if path.suffix == ".inter":
            return parsers.parse_atomic(path.parent)
        return parsers.parse_generic_csv(path)
    return parsers.detect_and_parse(path)


def _encode(raw: parsers.Raw) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Contiguous int32 ids in sorted raw-id order; the feature tables aligned to them."""
    inter = raw.interactions
    u_codes, u_raw = pd.factorize(inter[USER], sort=True)
    i_codes, i_raw = pd.factorize(inter[ITEM], sort=True)
    df = pd.DataFrame({USER: u_codes.astype(np.int32), ITEM: i_codes.astype(np.int32),
                       RATING: inter[RATING].to_numpy(np.float32), TIMESTAMP: inter[TIMESTAMP].to_numpy(np.int64)})
    users = pd.DataFrame({RAW_ID: np.asarray(u_raw, dtype=str)})
    items = pd.DataFrame({RAW_ID: np.asarray(i_raw, dtype=str)})
    if raw.users is not None:
        users = users.merge(raw.users.drop_duplicates(USER).rename(columns={USER: RAW_ID}), on=RAW_ID, how="left")
    if raw.items is not None:
        items = items.merge(raw.items.drop_duplicates(ITEM).rename(columns={ITEM: RAW_ID}), on=RAW_ID, how="left")
    return df, users, items


def _item_order(items: pd.DataFrame) -> np.ndarray:
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


def _positions(df: pd.DataFrame, tie_key: np.ndarray) -> np.ndarray:
    """Each interaction's place in its user's history: by timestamp, then `tie_key` (the split's tie
    rule: the same order that picks leave_last_out's val and test)."""
    users = df[USER].to_numpy()
    order = np.lexsort((tie_key, df[TIMESTAMP].to_numpy(), users))
    starts = np.concatenate([[0], np.cumsum(np.bincount(users))])[users[order]]
    pos = np.empty(len(df), dtype=np.int32)
    pos[order] = np.arange(len(df)) - starts
    return pos


def _split(df: pd.DataFrame, split: str, val_frac: float, test_frac: float, rng, tie_key=None) -> tuple[np.ndarray, int]:
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


def _drop_duplicates(inter: pd.DataFrame) -> tuple[pd.DataFrame, int]:
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


def prepare(raw: parsers.Raw, *, task: str = "rating", split: str = "random", val_frac: float = 0.1,
            test_frac: float = 0.1, positive_threshold: float = 4.0, min_user_ratings: int = 0,
            min_item_ratings: int = 0, eval_negatives: int = 99, seed: int = 42,
            tie_break: str = "random") -> Prepared:
    task_of(task)
    if split not in SPLITS:
        raise RecsysError(f"split={split!r} is not one of {', '.join(SPLITS)}")
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1) or val_frac + test_frac >= 1:
        raise RecsysError(f"val_frac={val_frac} + test_frac={test_frac} leave no training data; keep their sum below 1")
    if tie_break not in TIE_BREAKS:
        raise RecsysError(f"tie_break={tie_break!r} is not one of {', '.join(TIE_BREAKS)}")
    if eval_negatives < 0:
        raise RecsysError(f"eval_negatives={eval_negatives} must be >= 0")
    rng = np.random.default_rng(seed)
    n_raw = len(raw.interactions)
    inter, n_duplicates = _drop_duplicates(raw.interactions)
    if task == "implicit":
        inter = inter[inter[RATING] >= positive_threshold]
    for _ in range(1):  # one pass of each filter, in this order (documented in the README)
        if min_user_ratings > 1:
            inter = inter[inter.groupby(USER)[USER].transform("size") >= min_user_ratings]
        if min_item_ratings > 1:
            inter = inter[inter.groupby(ITEM)[ITEM].transform("size") >= min_item_ratings]
    if inter.empty:
        raise RecsysError("no interactions left after filtering; lower positive_threshold or the min_*_ratings filters")
    all_seen = raw.interactions  # every rated item counts as interacted, for the eval negatives
    df, users, items = _encode(parsers.Raw(inter.reset_index(drop=True), raw.users, raw.items))
    # the order inside a same-second batch: its own stream, so the rule never shifts the draws of the
    # split or of the eval negatives
    tie_key = (np.random.default_rng([seed, 7]).permutation(len(df)) if tie_break == "random"
               else _item_order(items)[df[ITEM].to_numpy()])
    df[POSITION] = _positions(df, tie_key)
    label, tie_users = _split(df, split, val_frac, test_frac, rng, tie_key if split == "leave_last_out" else None)
    parts = {name: df[label == k].reset_index(drop=True) for k, name in enumerate(SPLIT_NAMES)}
    if parts["train"].empty:
        raise RecsysError(f"split={split} with val_frac={val_frac}, test_frac={test_frac} leaves no training data")

    negatives = None
    if task == "implicit" and eval_negatives > 0:
        u_index = pd.Index(users[RAW_ID])
        i_index = pd.Index(items[RAW_ID])
        su = u_index.get_indexer(all_seen[USER])
        si = i_index.get_indexer(all_seen[ITEM])
        keep = (su >= 0) & (si >= 0)
        seen_keys = sorted_keys(su[keep], si[keep], len(items))
        eval_users = np.unique(np.concatenate([parts["val"][USER].to_numpy(), parts["test"][USER].to_numpy()]))
        negs = sample_eval_negatives(eval_users, len(items), eval_negatives, seen_keys, rng)
        negatives = pd.DataFrame({USER: np.repeat(eval_users, eval_negatives).astype(np.int32),
                                  ITEM: negs.reshape(-1).astype(np.int32)})

    train_users, train_items = set(parts["train"][USER].unique()), set(parts["train"][ITEM].unique())
    r = df[RATING].to_numpy(np.float64)
    meta = {
        "format_version": FORMAT_VERSION, "task": task, "split": split, "val_frac": val_frac, "test_frac": test_frac,
        "positive_threshold": positive_threshold if task == "implicit" else None,
        "min_user_ratings": min_user_ratings, "min_item_ratings": min_item_ratings,
        "eval_negatives": eval_negatives if negatives is not None else 0, "seed": seed,
        "tie_break": tie_break, "tie_picked_users": tie_users, "duplicates_dropped": n_duplicates,
        "n_raw_ratings": n_raw, "n_users": len(users), "n_items": len(items), "n_interactions": len(df),
        "rating_min": float(raw.interactions[RATING].min()), "rating_max": float(raw.interactions[RATING].max()),
        "rating_mean": float(r.mean()), "rating_std": float(r.std()),
        "sparsity": 1 - len(df) / (len(users) * len(items)),
        "counts": {k: len(v) for k, v in parts.items()},
        "cold_start": {k: {"users": int((~v[USER].isin(train_users)).sum()),
                           "items": int((~v[ITEM].isin(train_items)).sum()),
                           "rows": int((~v[USER].isin(train_users) | ~v[ITEM].isin(train_items)).sum())}
                       for k, v in parts.items() if k != "train"},
        "user_features": [c for c in users.columns if c != RAW_ID],
        "item_features": [c for c in items.columns if c != RAW_ID],
    }
    p = Prepared(parts["train"], parts["val"], parts["test"], users, items, negatives, meta)
    p.meta["ids_hash"] = ids_hash(p)
    p.meta["file_hashes"] = file_hashes(p)
    p.meta["content_hash"] = content_hash(p)
    return p


def summary(p: Prepared, name: str) -> str:
    m = p.meta
    what = "positives" if m["task"] == "implicit" else "ratings"
    return (f"{name} {m['task']}: {m['n_interactions']:,} {what}, {m['n_users']:,} users, {m['n_items']:,} items "
            f"(split {m['split']}: train {m['counts']['train']:,} / val {m['counts']['val']:,} / "
            f"test {m['counts']['test']:,}; content hash {m['content_hash'][:12]})")


def save(p: Prepared, out: Path) -> None:
    """Write parquet tables + dataset.json into `out` atomically (temp folder, then rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for name in SPLIT_NAMES:
            p.split(name).to_parquet(tmp / f"{name}.parquet", index=False)
        _to_parquet(p.users, tmp / "users.parquet")
        _to_parquet(p.items, tmp / "items.parquet")
        if p.negatives is not None:
            p.negatives.to_parquet(tmp / "eval_negatives.parquet", index=False)
        (tmp / "dataset.json").write_text(json.dumps(p.meta, indent=2, default=_json_default))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _to_parquet(df: pd.DataFrame, path: Path) -> None:
    df = df.copy()
    for c in df.columns:  # mixed object columns (e.g. zip codes read as str) must be one type
        if df[c].dtype == object:
            df[c] = df[c].astype("string")
    df.to_parquet(path, index=False)


def load(folder: Path, verify: bool = True) -> Prepared:
    """Read a data/ artifact back; with `verify`, refuse it unless its tables hash to the content hash
    prepare recorded (a tampered or truncated artifact is never trained or scored on)."""
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    if not meta_path.exists():
        raise RecsysError(f"{folder.name}/ has no dataset.json; pass the data/ artifact that prepare logged")
    try:
        meta = json.loads(meta_path.read_text())
        neg = folder / "eval_negatives.parquet"
        p = Prepared(*(pd.read_parquet(folder / f"{n}.parquet") for n in SPLIT_NAMES),
                     pd.read_parquet(folder / "users.parquet"), pd.read_parquet(folder / "items.parquet"),
                     pd.read_parquet(neg) if neg.exists() else None, meta)
    except (OSError, ValueError, KeyError, TypeError) as e:  # pyarrow's errors are ValueErrors / OSErrors
        raise RecsysError(f"the data artifact is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                          "run prepare again and pass its data URI") from None
    if verify:
        verify_hashes(p, folder.name)
    return p
