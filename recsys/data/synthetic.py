"""MovieLens-shaped synthetic data with a planted low-rank preference structure.

Users have long-tailed activity, items Zipf-like popularity; a rating is a rounded, clipped
``3.5 + b_u + b_i + <p_u, q_i> + noise``, so a factor model can learn it (it beats the global mean).
Side features are drawn so that some carry signal (genre flags follow the item factors). The data is
written in a real MovieLens format and read back through the same parser as the real thing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.parsers import ML100K_GENRES

OCCUPATIONS = ["administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
               "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
               "retired", "salesman", "scientist", "student", "technician", "writer"]
RANK = 8


def generate(n_users: int, n_items: int, n_ratings: int, seed: int):
    """Return (ratings, users, items) DataFrames with raw ids starting at 1."""
    if n_ratings > n_users * n_items // 2:
        from recsys.errors import RecsysError

        raise RecsysError(f"n_ratings={n_ratings} is too dense for {n_users}x{n_items}; use at most half the pairs")
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.45, (n_users, RANK)).astype(np.float32)
    q = rng.normal(0, 0.45, (n_items, RANK)).astype(np.float32)
    bu = rng.normal(0, 0.35, n_users).astype(np.float32)
    bi = rng.normal(0, 0.45, n_items).astype(np.float32)
    activity = rng.lognormal(0, 1.0, n_users)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity = popularity[rng.permutation(n_items)]
    bi += 0.3 * np.log(popularity / popularity.mean()).astype(np.float32) / 3  # popular items rate higher

    # draw pairs by activity x popularity, drop duplicates, top up until n_ratings distinct pairs
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n_ratings:
        m = int((n_ratings - len(keys)) * 1.3) + 16
        u = rng.choice(n_users, m, p=activity / activity.sum())
        i = rng.choice(n_items, m, p=popularity / popularity.sum())
        keys = np.unique(np.concatenate([keys, u.astype(np.int64) * n_items + i]))
    keys = rng.permutation(keys)[:n_ratings]
    keys.sort()
    users, items = keys // n_items, keys % n_items

    ratings = np.empty(n_ratings, dtype=np.float32)
    for s in range(0, n_ratings, 1 << 22):  # chunks keep the [n, RANK] gathers small
        u, i = users[s:s + (1 << 22)], items[s:s + (1 << 22)]
        dot = np.einsum("nk,nk->n", p[u], q[i])
        ratings[s:s + len(u)] = 3.5 + bu[u] + bi[i] + dot + rng.normal(0, 0.5, len(u))
    ratings = np.clip(np.rint(ratings), 1, 5)

    start = rng.integers(874_000_000, 890_000_000, n_users)  # ML-100K's time range
    ts = start[users] + rng.integers(0, 3_000_000, n_ratings)

    r = pd.DataFrame({"user": users + 1, "item": items + 1, "rating": ratings.astype(np.int8), "timestamp": ts})
    genre_flags = (q[:, :len(ML100K_GENRES)] if RANK >= len(ML100K_GENRES) else
                   np.concatenate([q, rng.normal(0, 0.45, (n_items, len(ML100K_GENRES) - RANK))], 1)) > 0.4
    u_df = pd.DataFrame({
        "user": np.arange(1, n_users + 1),
        "age": np.clip((30 + 12 * p[:, 0] / 0.45 + rng.normal(0, 6, n_users)).astype(int), 7, 73),
        "gender": np.where(p[:, 1] + rng.normal(0, 0.3, n_users) > 0, "M", "F"),
        "occupation": np.array(OCCUPATIONS)[rng.integers(0, len(OCCUPATIONS), n_users)],
        "zip": [f"{z:05d}" for z in rng.integers(0, 99999, n_users)],
    })
    i_df = pd.DataFrame({
        "item": np.arange(1, n_items + 1),
        "title": [f"Synthetic Movie {j}" for j in range(1, n_items + 1)],
        "year": rng.integers(1930, 1999, n_items),
        "flags": list(genre_flags.astype(int)),
    })
    return r, u_df, i_df


def write_ml100k(folder: Path, n_users: int, n_items: int, n_ratings: int, seed: int) -> Path:
    """u.data / u.user / u.item exactly as ML-100K lays them out."""
    r, u, i = generate(n_users, n_items, n_ratings, seed)
    folder.mkdir(parents=True, exist_ok=True)
    r.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    u.to_csv(folder / "u.user", sep="|", header=False, index=False)
    lines = []
    for item, title, year, flags in i.itertuples(index=False):
        lines.append("|".join([str(item), f"{title} ({year})", f"01-Jan-{year}", "", "http://example.invalid"]
                              + [str(f) for f in flags]))
    (folder / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return folder


def write_ratings_csv(folder: Path, n_users: int, n_items: int, n_ratings: int, seed: int) -> Path:
    """ratings.csv + movies.csv as ML-20M/25M/32M lay them out (pyarrow writer: 25M rows in seconds)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    r, _, i = generate(n_users, n_items, n_ratings, seed)
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({"userId": r["user"].to_numpy(), "movieId": r["item"].to_numpy(),
                      "rating": r["rating"].to_numpy().astype(np.float32), "timestamp": r["timestamp"].to_numpy()})
    pcsv.write_csv(table, folder / "ratings.csv", pcsv.WriteOptions(quoting_style="none"))
    genres = ["|".join(g for g, f in zip(ML100K_GENRES, flags) if f) or "(no genres listed)" for flags in i["flags"]]
    pd.DataFrame({"movieId": i["item"], "title": [f"{t} ({y})" for t, y in zip(i["title"], i["year"])],
                  "genres": genres}).to_csv(folder / "movies.csv", index=False)
    return folder
