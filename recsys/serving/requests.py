"""A request to a served model (or to batch `recommend`), read and checked: its rows, ids, histories and
`k`, each by one rule, with the limits an answer may reach. Pure: no model, no tables; a bad request is
a RecsysError of one line (the pyfunc answers it with HTTP 400)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.errors import RecsysError
from recsys.values import integer

HISTORY = "history"  # a request column: an anonymous user's recent items (sequence models)
MAX_ROWS = 10_000  # rows per request (users, or user-item pairs): more is refused in one line
MAX_RESULTS = 1_000_000  # rows an answer may hold (users x k): more is refused before anything is scored


def _is_nan(value) -> bool:  # a float NaN (an empty cell)
    return isinstance(value, float) and value != value


def parse_k(value) -> int:
    """`k`, the results per user: a positive integer (3, "3", 3.0), anything else refused in one line."""
    return integer("k", value, 1)


def ids(df: pd.DataFrame, col: str) -> list[str]:
    """Raw ids as strings; a null, a list or a fraction is refused naming its row (server and recommend)."""
    out = []
    for row, v in enumerate(df[col]):  # raw ids arrive as strings or JSON numbers (1 and 1.0 both mean "1")
        if isinstance(v, (list, tuple, dict, set, np.ndarray)) or isinstance(v, (bool, np.bool_)):
            raise RecsysError(f"`{col}` in row {row} is a {type(v).__name__}, not an id; send one string or "
                              f"integer {col} id per row")
        if v is None or v is pd.NA or _is_nan(v):
            raise RecsysError(f"`{col}` is null in row {row}; every row needs a {col} id")
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        elif isinstance(v, (float, np.floating)):
            raise RecsysError(f"`{col}` in row {row} is {v!r}, not an id; send string or integer ids")
        out.append(str(v))
    return out


def table(obj) -> pd.DataFrame:
    """The request as rows. MLflow hands a DataFrame for dataframe_split / dataframe_records / CSV, and
    for `inputs` / `instances` a dict of numpy arrays (columns) or a list of dicts of 0-d arrays (rows)."""
    if isinstance(obj, pd.DataFrame):
        df = obj
    else:
        if isinstance(obj, dict):
            bad = [c for c, v in obj.items()
                   if not (isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim >= 1))]
            if bad:
                raise RecsysError(f"the input's column {str(bad[0])[:40]!r} is not a list of ids; send each column as "
                                  "a list, or rows (dataframe_split, dataframe_records, or CSV with a header)")
            obj = {c: list(v) for c, v in obj.items()}
        elif isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
            obj = [{c: v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v for c, v in r.items()}
                   for r in obj]
        try:
            df = pd.DataFrame(obj)
        except (ValueError, TypeError) as e:
            raise RecsysError(f"the input is not a table of rows ({str(e).splitlines()[0][:120]}); send "
                              "dataframe_split, dataframe_records, or CSV with a header") from None
    if not isinstance(df.index, pd.RangeIndex):  # {"inputs": {"user": {"a": 1}}}: a mapping, not rows
        raise RecsysError("the input is a mapping, not rows; send a list of rows (dataframe_split, "
                          "dataframe_records, or inputs as a list), or CSV with a header")
    return df


def history(value, row: int) -> list[str] | None:
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


def check_results(n_users: int, k: int, n_items: int) -> None:
    if n_users * min(k, n_items) > MAX_RESULTS:
        raise RecsysError(f"{n_users:,} users x k={k} would return more than {MAX_RESULTS:,} rows; lower k or send "
                          "fewer users per request")


@dataclass
class Request:
    """What is asked: `pairs` (score each user-item row), `histories` (top-k from each row's history,
    None where a row sends none) or `users` (their top-k unseen items)."""
    kind: str
    users: list[str]
    items: list[str] | None = None
    histories: list[list[str] | None] | None = None
    k: int = 0


def parse(obj, k, n_items: int) -> Request:
    """A request from what MLflow hands the model (rows in any of its input formats) and its `k` param."""
    df = table(obj)
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
    users = ids(df, "user")
    has_items = "item" in df.columns and df["item"].notna().any()
    if HISTORY in df.columns and df[HISTORY].map(lambda v: v is not None and not _is_nan(v)).any():
        if has_items:
            raise RecsysError("send either `item` (score pairs) or `history` (recommend from it), not both")
        k = parse_k(k)
        check_results(len(users), k, n_items)
        return Request("histories", users, histories=[history(v, row) for row, v in enumerate(df[HISTORY])], k=k)
    if has_items:
        return Request("pairs", users, items=ids(df, "item"))
    k = parse_k(k)
    check_results(len(users), k, n_items)
    return Request("users", users, k=k)
