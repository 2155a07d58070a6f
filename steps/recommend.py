"""recommend: batch top-K for every user (or the listed ones) of a served model, with titles.

Parameters: model_uri (runs:/<train_run>/model, models:/<name>/<version>, models:/<name>@champion), k
(default 10), users (`all`, or a file: a CSV/parquet with a `user` column, or one raw id per line; for
sasrec and gru4rec a `history` column too: each row's recent items, most recent last, space-separated
in CSV, and that row is answered from them as the served model does).
Logs recommendations.parquet and recommendations.csv (user, rank, item, score, title, year, genres,
fallback), metrics users, rows, recommend_seconds; tags model_uri. Users are ranked in blocks (one
matrix product per block for dot-product models), never one by one.
"""

import tempfile
import time
from pathlib import Path

import pandas as pd

import mlflow

from recsys import tracking
from recsys.errors import RecsysError
from recsys.serving import requests
from steps import ArgParser

p = ArgParser(prog="recommend", description=__doc__.splitlines()[0])
p.add_argument("--model-uri", "--model_uri", dest="model_uri", required=True)
p.add_argument("--k", default="10")
p.add_argument("--users", default="all")


def read_users(spec: str) -> pd.DataFrame | None:
    if spec in ("", "all"):
        return None
    path = Path(spec)
    if not path.is_file():
        raise RecsysError(f"users={spec!r} is neither `all` nor an existing file; pass a CSV/parquet with a `user` "
                          "column or a text file with one id per line")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix == ".csv":
            df = pd.read_csv(path, dtype=str)
        else:
            df = pd.DataFrame({"user": [line.strip() for line in path.read_text().splitlines() if line.strip()]})
    except (OSError, ValueError) as e:
        raise RecsysError(f"users file {path.name} is unreadable ({str(e).splitlines()[0][:120]})") from None
    if "user" not in df.columns:
        raise RecsysError(f"users file {path.name} has columns {list(df.columns)[:5]} but no `user`")
    return df


SHOWN = 3  # users whose first items are printed
SHOWN_ITEMS = 10  # at most this many of each one's k


def in_id_order(ids) -> list[str]:
    """Raw ids as a person counts them: numeric ones by number (1, 2, 10, not 1, 10, 100), others after, as text."""
    return sorted(ids, key=lambda x: (0, int(x), "") if x.isdigit() else (1, 0, x))


def main(argv=None):
    with tracking.step_run("recommend") as run, tempfile.TemporaryDirectory(prefix="recsys-recommend-") as tmp:
        tmp = Path(tmp)
        a = p.parse_args(argv)
        users = read_users(a.users)
        bundle = tracking.load_bundle(a.model_uri, tmp / "model")
        k = requests.parse_k(a.k)
        mlflow.set_tag("mlflow.runName", f"recommend top-{k}")
        given = users
        # the served model's rule: a blank (CSV) or null (parquet) user is refused, naming its row
        users = requests.ids(given, "user") if given is not None else in_id_order(bundle.user_index)
        tracking.log_params({"model_uri": a.model_uri, "k": k, "users": a.users})
        tracking.log_context({"model_uri": a.model_uri, "step": "recommend", "dataset": bundle.meta.get("dataset", "")})
        t0 = time.perf_counter()
        if given is not None and "history" in given.columns:  # rows answered from the items they list
            recs = bundle.recommend_rows(users, list(given["history"]), k)
        else:
            recs = bundle.recommend(users, k)
        seconds = time.perf_counter() - t0
        out = tmp / "out"
        out.mkdir()
        recs.to_parquet(out / "recommendations.parquet", index=False)
        recs.to_csv(out / "recommendations.csv", index=False)
        mlflow.log_artifact(out / "recommendations.parquet")
        mlflow.log_artifact(out / "recommendations.csv")
        tracking.log_metrics({"users": len(users), "rows": len(recs), "recommend_seconds": seconds})
        mlflow.set_tag("mlflow.note.content", f"top-{k} for {len(users):,} users of {a.model_uri} in {seconds:.2f}s")
        print(f"top-{k} for {len(users):,} users in {seconds:.2f}s: runs:/{run.info.run_id}/recommendations.parquet")
        for user, rows in list(recs.groupby("user", sort=False))[:SHOWN]:  # what a person checks first
            fb = rows["fallback"].iloc[0] if "fallback" in rows else ""
            more = f" (the first {SHOWN_ITEMS} of {k})" if k > SHOWN_ITEMS else ""
            print(f"user {user}{f' ({fb} fallback)' if fb else ''}{more}:")
            for r in rows.head(SHOWN_ITEMS).itertuples():
                title = getattr(r, "title", None) or r.item
                print(f"  {r.rank:>2}. {title}" + (f" ({r.year})" if getattr(r, "year", None) == getattr(r, "year", None)
                                                    and getattr(r, "year", None) is not None else ""))
    return run.info.run_id


if __name__ == "__main__":
    main()
