"""Raw tables -> encoded, filtered, split data with stored evaluation negatives.

`prepare()` is pure (DataFrames in, `Prepared` out; the orders and splits are recsys/data/splits.py's);
`save()` and `load()` are the artifact's (recsys/data/artifact.py): written atomically, read back only
when no file changed (recsys/data/hashes.py: every file, so the same seed gives the same hash and
evaluation can refuse data that does not match a model).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data import parsers, sources, splits, synthetic
from recsys.data.artifact import SPLIT_NAMES, Prepared, load, save
from recsys.data.hashes import FORMAT_VERSION, content_hash, file_hashes, ids_hash
from recsys.data.negatives import sample_eval_negatives, sorted_keys
from recsys.errors import RecsysError
from recsys.schema import (ITEM, POSITION, PREPARE_DEFAULTS, RATING, RAW_ID, SPLITS, TIE_BREAKS, TIMESTAMP, USER,
                           task_of)

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


# prepare's parameters and their defaults (schema.PREPARE_DEFAULTS, read by MLproject's prepare entry point
# through tests/test_docs.py, steps/prepare.py, main and train's default data)
DEFAULTS = PREPARE_DEFAULTS


def prepare(raw: parsers.Raw, *, task: str = "rating", split: str = "auto", val_frac: float = 0.1,
            test_frac: float = 0.1, positive_threshold: float = 4.0, min_user_ratings: int = 0,
            min_item_ratings: int = 0, eval_negatives: int = 99, seed: int = 42,
            tie_break: str = "random") -> Prepared:
    split = task_of(task).split if split in ("auto", "") else split
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
    inter, n_duplicates = splits.drop_duplicates(raw.interactions)
    if task == "implicit":
        inter = inter[inter[RATING] >= positive_threshold]
    # one pass of each filter, in this order (documented in the README)
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
               else splits.item_order(items)[df[ITEM].to_numpy()])
    df[POSITION] = splits.positions(df, tie_key)
    label, tie_users = splits.split_labels(df, split, val_frac, test_frac, rng, tie_key if split == "leave_last_out" else None)
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
        negs = sample_eval_negatives(eval_users, len(items), eval_negatives, seen_keys, rng,
                                     users[RAW_ID].to_numpy())
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


__all__ = ["SPLIT_NAMES", "Prepared", "load", "load_raw", "prepare", "save", "summary"]
