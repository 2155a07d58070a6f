"""The data/ artifact: `Prepared` (the split tables, the id maps with their features, the evaluation
negatives and dataset.json's metadata), written atomically and read back only if every file still
hashes to what prepare recorded (recsys/data/hashes.py)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys.data.hashes import _json_default, verify_hashes
from recsys.errors import RecsysError

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
