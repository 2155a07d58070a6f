"""What a data/ artifact hashes to: a hash per file (each table's values, dataset.json's fields), the
content hash over them, and the check that refuses an artifact any file of which changed."""

from __future__ import annotations

import hashlib
import json
import numpy as np
import pandas as pd

from recsys.errors import RecsysError
from recsys.schema import RAW_ID

FORMAT_VERSION = 3  # 2: every file hashed (file_hashes in dataset.json); 3: each history's order (position)


def ids_hash(p: "Prepared") -> str:
    """Hash of the raw-id maps alone: data with the same ids can be scored by the same model."""
    h = hashlib.sha256()
    for t in (p.users, p.items):
        h.update("\x1f".join(t[RAW_ID].astype(str)).encode())
        h.update(b"\x1e")
    return h.hexdigest()


# what each file of the data/ artifact holds, for the per-file hashes (dataset.json: the metadata)
FILES = {"train": "train.parquet", "val": "val.parquet", "test": "test.parquet", "negatives": "eval_negatives.parquet",
         "users": "users.parquet", "items": "items.parquet"}
UNHASHED_META = ("content_hash", "file_hashes", "name", "version")  # derived, or set after the hash


def _table_hash(t: pd.DataFrame, exact: bool) -> str:
    """sha256 of a table's values, independent of parquet's encoding: the interaction tables by their
    arrays, the feature tables (mixed, nullable columns) by each value's text."""
    h = hashlib.sha256()
    for col in t.columns:
        h.update(col.encode() + b"\x1f")
        s = t[col]
        if exact and s.dtype.kind in "biuf":
            h.update(s.to_numpy().tobytes())
        else:
            h.update("\x1e".join(s.astype("string").fillna("\x00").tolist()).encode())
    return h.hexdigest()


def _meta_hash(meta: dict) -> str:
    kept = {k: v for k, v in meta.items() if k not in UNHASHED_META}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=_json_default).encode()).hexdigest()


def file_hashes(p: "Prepared") -> dict[str, str]:
    """A hash per file of the artifact: each table's values, and dataset.json's other fields."""
    tables = {"train": p.train, "val": p.val, "test": p.test, "negatives": p.negatives, "users": p.users,
              "items": p.items}
    out = {FILES[k]: _table_hash(t, exact=k not in ("users", "items")) for k, t in tables.items() if t is not None}
    out["dataset.json"] = _meta_hash(p.meta)
    return out


def content_hash(p: "Prepared") -> str:
    """sha256 over the per-file hashes (every table, every feature, title and metadata field)."""
    return hashlib.sha256(json.dumps(p.meta["file_hashes"], sort_keys=True).encode()).hexdigest()



def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))



def verify_hashes(p: "Prepared", where: str = "data") -> None:
    """Refuse an artifact any file of which changed after prepare hashed it, naming the file."""
    if p.meta.get("format_version", 1) < FORMAT_VERSION:
        raise RecsysError(f"the data artifact was made by an older prepare (format {p.meta.get('format_version', 1)}, "
                          f"not {FORMAT_VERSION}); run prepare again and pass its data URI")
    recorded = p.meta.get("file_hashes")
    if not isinstance(recorded, dict) or content_hash(p) != p.meta.get("content_hash"):
        raise RecsysError(f"the data artifact does not match its content hash {str(p.meta.get('content_hash'))[:12]} "
                          "(changed after prepare logged it); run prepare again and pass its data URI")
    for name, h in file_hashes(p).items():
        if recorded.get(name) != h:
            raise RecsysError(f"{where}/{name} changed after prepare hashed it (it no longer matches the artifact's "
                              "content hash); run prepare again and pass its data URI")
