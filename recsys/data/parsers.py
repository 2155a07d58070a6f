"""Parsers: every MovieLens file format -> the same normalised tables.

Each parser returns ``Raw(interactions, users, items)``:
- interactions: user (str), item (str), rating (float32), timestamp (int64)
- users: user (str) + whichever of age, gender, occupation, zip the dataset has
- items: item (str) + whichever of title, year, genres ('|'-joined) it has

Raw ids are kept as strings so that every format gives the same types; `prepare` encodes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import RecsysError
from recsys.schema import AGE, GENDER, GENRES, ITEM, OCCUPATION, RATING, TIMESTAMP, TITLE, USER, YEAR, ZIP

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class Raw:
    interactions: pd.DataFrame
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None


def _check_interactions(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Types, emptiness and numeric ratings, with the offending line named."""
    if df.empty:
        raise RecsysError(f"{source} holds no ratings; supply a file with at least one user,item,rating row")
    for col in (USER, ITEM):  # a blank or missing id would become an id of its own ("nan")
        ids = df[col]
        blank = ids.isna().to_numpy() | (ids.astype(str).str.strip() == "").to_numpy()
        if blank.any():
            row = int(np.flatnonzero(blank)[0])
            raise RecsysError(f"{source}: the {col} id on data row {row + 1} is blank or missing; fix or remove that row")
    rating = df[RATING] if pd.api.types.is_float_dtype(df[RATING]) else pd.to_numeric(df[RATING], errors="coerce")
    with np.errstate(over="ignore"):  # a rating float32 cannot hold (1e39) becomes inf: refused below
        bad = ~np.isfinite(rating.to_numpy(np.float64).astype(np.float32))  # NaN, text, +-inf, out of range
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise RecsysError(
            f"{source}: rating {df[RATING].iloc[row]!r} on data row {row + 1} is not a finite number a rating can "
            "hold; fix or remove that row"
        )
    if TIMESTAMP in df:
        ts = pd.to_numeric(df[TIMESTAMP], errors="coerce")
        values = ts.to_numpy(np.float64)
        bad = ~np.isfinite(values) | (np.abs(values) >= 2.0 ** 62) | (values != np.round(values))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise RecsysError(f"{source}: timestamp {df[TIMESTAMP].iloc[row]!r} on data row {row + 1} is not a whole "
                              "number of seconds a timestamp can hold; fix or remove that row")
        ts = ts.astype("int64")
    else:
        ts = pd.Series(np.zeros(len(df), dtype="int64"))
    return pd.DataFrame({
        USER: df[USER].astype(str).to_numpy(),
        ITEM: df[ITEM].astype(str).to_numpy(),
        RATING: rating.astype("float32").to_numpy(),
        TIMESTAMP: ts.to_numpy(),
    })


MAX_LINE_BYTES = 1 << 20  # no MovieLens line comes near this; a longer "field" is a broken or hostile file


def inspect_text(path: Path, preferred: str = "utf-8", limit: int | None = None) -> str:
    """One pass over a file before any parser sees it: refuse a line longer than `limit` bytes (a parser
    would try to allocate the whole field, many times over), and return `preferred` when the file
    decodes with it, else latin-1 (which decodes any byte; MovieLens' own older files are latin-1)."""
    import codecs

    limit = MAX_LINE_BYTES if limit is None else limit
    dec = None if preferred == "latin-1" else codecs.getincrementaldecoder(preferred)()
    carry, offset = 0, 0  # bytes since the last newline, across blocks
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            nl = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            if len(nl):
                longest = max(carry + int(nl[0]), int(np.diff(nl).max(initial=1)) - 1, len(block) - int(nl[-1]) - 1)
                carry = len(block) - int(nl[-1]) - 1
            else:
                carry += len(block)
                longest = carry
            if longest > limit:
                raise RecsysError(f"{path.name} has a line longer than {limit:,} bytes near byte {offset:,}; "
                                  "it is not a ratings file (or is corrupt)")
            offset += len(block)
            if dec is not None:
                try:
                    dec.decode(block)
                except UnicodeDecodeError:
                    dec = None  # not `preferred`: keep checking lines only
                    preferred = "latin-1"
    if dec is not None:
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            preferred = "latin-1"
    return preferred


def _read(path: Path, sep: str, names: list[str], encoding: str = "utf-8", header=None, **kw) -> pd.DataFrame:
    if not path.is_file():
        raise RecsysError(f"{path.name} is missing or not a file; supply the dataset's complete files")
    encoding = inspect_text(path, encoding)
    try:
        if len(sep) > 1:  # '::' needs the python engine; turn it into one char first for speed
            text = path.read_text(encoding=encoding).replace("::", "\t")
            from io import StringIO

            return pd.read_csv(StringIO(text), sep="\t", names=names, header=header, dtype=str, **kw)
        return pd.read_csv(path, sep=sep, names=names, header=header, dtype=str, encoding=encoding, **kw)
    except pd.errors.EmptyDataError:
        raise RecsysError(f"{path.name} is empty; supply a file with ratings in it") from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as e:
        raise RecsysError(f"{path.name} could not be parsed ({(str(e).strip().splitlines() or ['?'])[-1][:200]}); "
                          "check its format") from None


def _year_from_title(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    year = titles.str.extract(_YEAR_IN_TITLE, expand=False)
    clean = titles.str.replace(_YEAR_IN_TITLE, "", regex=True).str.strip()
    return clean, pd.to_numeric(year, errors="coerce").astype("Int64")


def parse_ml100k(folder: Path) -> Raw:
    """u.data (tab: user item rating ts), u.user (|), u.item (| latin-1, 19 genre flags)."""
    inter = _read(folder / "u.data", "\t", [USER, ITEM, RATING, TIMESTAMP])
    users = items = None
    if (folder / "u.user").exists():
        users = _read(folder / "u.user", "|", [USER, AGE, GENDER, OCCUPATION, ZIP])
        users[AGE] = pd.to_numeric(users[AGE], errors="coerce")
    if (folder / "u.item").exists():
        cols = [ITEM, TITLE, "release_date", "video", "url"] + ML100K_GENRES
        raw = _read(folder / "u.item", "|", cols, encoding="latin-1")
        flags = raw[ML100K_GENRES].fillna("0").to_numpy() == "1"
        genres = ["|".join(g for g, f in zip(ML100K_GENRES, row) if f) for row in flags]
        title, year = _year_from_title(raw[TITLE].fillna(""))
        year = year.fillna(pd.to_numeric(raw["release_date"].str[-4:], errors="coerce").astype("Int64"))
        items = pd.DataFrame({ITEM: raw[ITEM], TITLE: title, YEAR: year, GENRES: genres})
    return Raw(_check_interactions(inter, "u.data"), users, items)


def parse_dat(folder: Path) -> Raw:
    """ml-1m / ml-10m: ratings.dat, users.dat (ml-1m only), movies.dat, all '::'-separated."""
    inter = _read(folder / "ratings.dat", "::", [USER, ITEM, RATING, TIMESTAMP], encoding="latin-1")
    users = items = None
    if (folder / "users.dat").exists():
        users = _read(folder / "users.dat", "::", [USER, GENDER, AGE, OCCUPATION, ZIP], encoding="latin-1")
        users[AGE] = pd.to_numeric(users[AGE], errors="coerce")
    if (folder / "movies.dat").exists():
        movies = _read(folder / "movies.dat", "::", [ITEM, TITLE, GENRES], encoding="latin-1")
        items = _movies_table(movies)
    return Raw(_check_interactions(inter, "ratings.dat"), users, items)


def _movies_table(movies: pd.DataFrame) -> pd.DataFrame:
    title, year = _year_from_title(movies[TITLE].fillna(""))
    genres = movies[GENRES].fillna("").replace("(no genres listed)", "")
    return pd.DataFrame({ITEM: movies[ITEM], TITLE: title, YEAR: year, GENRES: genres})


def parse_movielens_csv(folder: Path) -> Raw:
    """ml-latest-small, 20m, 25m, 32m: ratings.csv (userId,movieId,rating,timestamp) + movies.csv."""
    path = folder / "ratings.csv"
    encoding = inspect_text(path)
    try:
        # fast path: the pyarrow engine with numeric ratings reads 25M rows in seconds
        inter = pd.read_csv(path, engine="pyarrow", dtype={"userId": str, "movieId": str, "rating": "float32"},
                            encoding=encoding)
    except pd.errors.EmptyDataError:
        raise RecsysError("ratings.csv is empty; supply a file with ratings in it") from None
    except Exception:
        # malformed: read everything as text so the checks below can name the offending row
        try:
            inter = pd.read_csv(path, dtype=str, encoding=encoding)
        except pd.errors.EmptyDataError:
            raise RecsysError("ratings.csv is empty; supply a file with ratings in it") from None
        except (pd.errors.ParserError, ValueError) as e:
            raise RecsysError(f"ratings.csv could not be parsed ({str(e).splitlines()[-1]}); check its format") from None
    missing = {"userId", "movieId", "rating"} - set(inter.columns)
    if missing:
        raise RecsysError(
            f"ratings.csv lacks column(s) {sorted(missing)} (has {list(inter.columns)}); "
            "expected userId,movieId,rating,timestamp"
        )
    inter = inter.rename(columns={"userId": USER, "movieId": ITEM, "rating": RATING, "timestamp": TIMESTAMP})
    items = None
    if (folder / "movies.csv").exists():
        movies = _read(folder / "movies.csv", ",", None, header=0)
        if not {"movieId", "title", "genres"} <= set(movies.columns):
            raise RecsysError(f"movies.csv has columns {list(movies.columns)[:5]}; expected movieId,title,genres")
        items = _movies_table(movies.rename(columns={"movieId": ITEM, "title": TITLE, "genres": GENRES}))
    return Raw(_check_interactions(inter, "ratings.csv"), None, items)


def _atomic(path: Path) -> pd.DataFrame:
    """RecBole atomic file: tab-separated, header fields typed as ``name:type``."""
    df = _read(path, "\t", None, header=0, quoting=3)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def parse_atomic(folder: Path) -> Raw:
    """RecBole atomic files <name>.inter / .user / .item (typed headers)."""
    inter_files = sorted(folder.glob("*.inter"))
    stem = inter_files[0].with_suffix("")
    inter = _atomic(inter_files[0]).rename(columns={"user_id": USER, "item_id": ITEM})
    missing = {USER, ITEM, RATING} - set(inter.columns)
    if missing:
        raise RecsysError(f"{inter_files[0].name} lacks field(s) {sorted(missing)}; expected user_id, item_id, rating")
    users = items = None
    if stem.with_suffix(".user").exists():
        users = _atomic(stem.with_suffix(".user")).rename(columns={"user_id": USER, "zip_code": ZIP})
        users[AGE] = pd.to_numeric(users[AGE], errors="coerce")
    if stem.with_suffix(".item").exists():
        raw = _atomic(stem.with_suffix(".item"))
        # genres are space-separated tokens ("Animation Children's Comedy")
        items = pd.DataFrame({
            ITEM: raw["item_id"],
            TITLE: raw.get("movie_title", pd.Series([""] * len(raw))),
            YEAR: pd.to_numeric(raw.get("release_year"), errors="coerce").astype("Int64"),
            GENRES: raw.get("class", pd.Series([""] * len(raw))).fillna("").str.replace(" ", "|"),
        })
    return Raw(_check_interactions(inter, inter_files[0].name), users, items)


GENERIC_ALIASES = {
    USER: ("user", "user_id", "userid", "userId"),
    ITEM: ("item", "item_id", "itemid", "movieId", "movie_id"),
    RATING: ("rating", "score"),
    TIMESTAMP: ("timestamp", "ts", "time"),
}


def parse_generic_csv(path: Path) -> Raw:
    """Any CSV with a header naming user,item,rating[,timestamp] (common aliases accepted)."""
    try:
        df = _read(path, ",", None, header=0)
    except RecsysError as e:
        if "is empty" in str(e):
            raise RecsysError(f"{path.name} is empty; supply a CSV with a user,item,rating header and rows") from None
        raise
    lower = {c.lower(): c for c in df.columns}
    rename = {}
    for col, aliases in GENERIC_ALIASES.items():
        hit = next((lower[a.lower()] for a in aliases if a.lower() in lower), None)
        if hit is not None:
            rename[hit] = col
    missing = [c for c in (USER, ITEM, RATING) if c not in rename.values()]
    if missing:
        raise RecsysError(
            f"{path.name} has columns {list(df.columns)} but lacks {missing}; "
            "a CSV needs a header with user,item,rating[,timestamp]"
        )
    return Raw(_check_interactions(df.rename(columns=rename), path.name))


def detect_and_parse(folder: Path) -> Raw:
    """Pick the parser by the files a folder holds (searching one level of subfolders)."""
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    for d in candidates:
        if (d / "u.data").exists():
            return parse_ml100k(d)
        if (d / "ratings.dat").exists():
            return parse_dat(d)
        if (d / "ratings.csv").exists():
            return parse_movielens_csv(d)
        if any(d.glob("*.inter")):
            return parse_atomic(d)
    raise RecsysError(
        f"no MovieLens files found in {folder.name}/ (looked for u.data, ratings.dat, ratings.csv, *.inter); "
        "point dataset= at a MovieLens archive, folder or ratings CSV"
    )
