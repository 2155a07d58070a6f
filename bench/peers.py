"""Other libraries fitted on the very same split and scored by the project's own evaluator.

    pip install -e '.[peers]'
    python bench/peers.py --data runs:/<prepare_run>/data [--experiment <name>]
    python bench/peers.py --experiment <name> --all          # every finished prepare run there
    python bench/peers.py --dataset ml-100k --task implicit --split leave_last_out --positive-threshold 1 --seed 42

Each peer is fitted on exactly the prepare run's train rows, then scored through
`recsys.evaluation.evaluate` (the same ranking, masking, cold-start fallback and metric code as the
`evaluate` step), and logged as an MLflow run tagged `peer=<library>` with the same setup tags, so
`mlflow run . -e report` shows it beside the project's models. Prints one line per peer with its
headline metric and its fit time.

Rating task (Surprise): BaselineOnly, SVD with defaults, SVD tuned (100 factors, 40 epochs, lr_all
0.01, reg_all 0.08), SVD++. Implicit task (`implicit`): BPR (128 factors, lr 0.01, reg 0.01, 100
iterations), ALS (32 factors, reg 1.0, alpha 1.0, 15 iterations), and item popularity by count.
Implicit `leave_last_out` splits, with `--recbole-python <RecBole's interpreter>` (or $RECBOLE_PYTHON):
RecBole 1.2.1's SASRec and GRU4Rec (its defaults, cross-entropy over the catalogue, early-stopped on
its validation NDCG@10), fitted by bench/recbole_fit.py in RecBole's own virtualenv on the same
interactions in the same order, then scored by the project's evaluator:

    python -m venv .venv-recbole && .venv-recbole/bin/pip install torch==2.13.0 recbole==1.2.1 "numpy<2"
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow

from recsys import evaluation, tracking  # noqa: E402
from recsys.data import prepare as prep  # noqa: E402
from recsys.models.base import Model  # noqa: E402
from recsys.schema import ITEM, RATING, TASKS, USER  # noqa: E402


class TableModel(Model):
    """A peer's scores as a dense [n_users, n_items] table: `forward` for pairs, `score_matrix` for
    blocks of users; the same interface the evaluator uses for the project's models."""

    scores_catalogue = True

    def __init__(self, table: np.ndarray):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(np.asarray(table, np.float32)))

    def forward(self, user, item):
        return self.table[user, item]

    def score_matrix(self, user):
        return self.table[user]


class Wrapped:
    """What `evaluation.evaluate` reads: `module(u, i)` (predictions) and `module.model` (ranking)."""

    def __init__(self, table: np.ndarray):
        self.model = TableModel(table)

    def __call__(self, user, item):
        return self.model(user, item)


def surprise_peers(data: prep.Prepared, seed: int):
    from surprise import SVD, BaselineOnly, Dataset, Reader, SVDpp

    tr = data.train
    lo, hi = data.meta["rating_min"], data.meta["rating_max"]
    reader = Reader(rating_scale=(lo, hi))
    trainset = Dataset.load_from_df(tr[[USER, ITEM, RATING]].astype({RATING: float}), reader).build_full_trainset()
    algos = {
        "surprise:BaselineOnly": lambda: BaselineOnly(verbose=False),
        "surprise:SVD": lambda: SVD(random_state=seed),
        "surprise:SVD-tuned": lambda: SVD(n_factors=100, n_epochs=40, lr_all=0.01, reg_all=0.08, random_state=seed),
        "surprise:SVDpp": lambda: SVDpp(random_state=seed, cache_ratings=True),
    }
    rows = np.concatenate([data.val[[USER, ITEM]].to_numpy(), data.test[[USER, ITEM]].to_numpy()])
    for name, make in algos.items():
        algo = make()
        t0 = time.perf_counter()
        algo.fit(trainset)
        seconds = time.perf_counter() - t0
        table = np.full((data.n_users, data.n_items), trainset.global_mean, np.float32)
        # the evaluator reads only the val/test rows: predict those (Surprise's own clipping to the scale)
        table[rows[:, 0], rows[:, 1]] = [algo.predict(u, i, clip=True).est for u, i in rows]
        yield name, "surprise", table, seconds


def implicit_peers(data: prep.Prepared, seed: int, threads: int):
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    tr = data.train
    ui = sp.csr_matrix((np.ones(len(tr), np.float32), (tr[USER].to_numpy(), tr[ITEM].to_numpy())),
                       shape=(data.n_users, data.n_items))
    algos = {
        "implicit:BPR": lambda: BayesianPersonalizedRanking(factors=128, learning_rate=0.01, regularization=0.01,
                                                            iterations=100, random_state=seed, num_threads=threads),
        "implicit:ALS": lambda: AlternatingLeastSquares(factors=32, regularization=1.0, alpha=1.0, iterations=15,
                                                        random_state=seed, num_threads=threads),
    }
    for name, make in algos.items():
        algo = make()
        t0 = time.perf_counter()
        algo.fit(ui, show_progress=False)
        seconds = time.perf_counter() - t0
        uf, itf = np.asarray(algo.user_factors), np.asarray(algo.item_factors)
        yield name, "implicit", uf @ itf.T, seconds
    t0 = time.perf_counter()
    counts = np.bincount(tr[ITEM].to_numpy(), minlength=data.n_items).astype(np.float32)
    yield "peer:popularity", "counts", np.broadcast_to(counts, (data.n_users, data.n_items)), time.perf_counter() - t0


def recbole_peers(data: prep.Prepared, seed: int, python: str, only: set[str] | None = None):
    """RecBole's sequential models, each fitted in RecBole's own interpreter (bench/recbole_fit.py); with
    `only`, just those named (a fit is minutes an epoch on a CPU)."""
    import subprocess

    from recsys.schema import POSITION

    with tempfile.TemporaryDirectory(prefix="recbole-") as tmp:
        folder = Path(tmp)
        rows = [t[[USER, ITEM, POSITION]] for t in (data.train, data.val, data.test)]
        import pandas as pd

        pd.concat(rows).rename(columns={USER: "user", ITEM: "item", POSITION: "position"}).to_csv(
            folder / "interactions.csv", index=False)
        (folder / "shape.json").write_text(json.dumps([data.n_users, data.n_items]))
        for model in [m for m in ("SASRec", "GRU4Rec") if not only or f"recbole:{m}" in only]:
            subprocess.run([python, str(Path(__file__).resolve().with_name("recbole_fit.py")), "--folder", str(folder),
                            "--model", model, "--seed", str(seed)], check=True, cwd=folder)  # its logs stay there
            info = json.loads((folder / f"{model}.json").read_text())
            yield f"recbole:{model}", "recbole", np.load(folder / f"{model}.npy"), info["seconds"]


def run_peers(data_uri: str, threads: int, only: set[str] | None = None, recbole: str = "") -> list[str]:
    """Fit and log every peer for the data behind `data_uri`; return the lines printed."""
    with tempfile.TemporaryDirectory() as tmp:
        data = prep.load(tracking.download(data_uri, "data", Path(tmp)))
    meta = data.meta
    seed = int(meta.get("seed", 42))
    peers = surprise_peers(data, seed) if meta["task"] == "rating" else implicit_peers(data, seed, threads)
    if recbole and meta["task"] == "implicit" and meta["split"] == "leave_last_out":
        import itertools

        peers = itertools.chain(peers, recbole_peers(data, seed, recbole, only))
    lines = []
    for name, library, table, seconds in peers:
        if only and name not in only:
            continue
        ev = evaluation.evaluate(Wrapped(table), data, "test", [5, 10, 20], "both")
        with tracking.step_run(f"peer {name} {meta.get('name', '')} {meta['task']}"):
            tracking.log_context({"peer": library, "model": name, "step": "evaluate", "data_uri": data_uri,
                                  "seed": str(seed), **evaluation.setup_tags(meta, "test", "both")})
            tracking.log_params({"model": name, "data": data_uri})
            tracking.log_metrics({**ev.metrics, "train_seconds": seconds})
            with tempfile.TemporaryDirectory() as out:
                (Path(out) / "metrics.json").write_text(json.dumps(ev.metrics, indent=2))
                ev.per_user.to_parquet(Path(out) / "per_user.parquet", index=False)
                mlflow.log_artifact(Path(out) / "metrics.json")
                mlflow.log_artifact(Path(out) / "per_user.parquet")
        key = TASKS[meta["task"]].key("test")
        lines.append(f"{name} on {data_uri} (seed {seed}): {key}={ev.metrics[key]:.4f}, fit {seconds:.1f}s")
        print(lines[-1], flush=True)
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="", help="runs:/<prepare_run>/data")
    p.add_argument("--experiment", default="", help="experiment to log into (and to scan with --all)")
    p.add_argument("--all", action="store_true", help="every finished prepare run of --experiment without peers")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated peer names (default: all)")
    p.add_argument("--recbole-python", default=os.environ.get("RECBOLE_PYTHON", ""),
                   help="RecBole's interpreter: adds its SASRec and GRU4Rec on implicit leave_last_out splits")
    for k, v in (("dataset", "ml-100k"), ("task", "rating"), ("split", ""), ("positive-threshold", "4"),
                 ("seed", "42"), ("tie-break", "random")):
        p.add_argument(f"--{k}", default=v, help="prepare a dataset first when neither --data nor --all is given")
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    torch.set_num_threads(max(1, a.threads))
    if a.experiment:
        mlflow.set_experiment(a.experiment).experiment_id
    only = {s for s in a.only.split(",") if s} or None
    if a.all:
        uris = tracking.prepare_runs_without_peers(a.experiment)
    elif a.data:
        uris = [a.data]
    else:
        from steps import prepare as prepare_step

        split = a.split or TASKS[a.task].split
        run_id = prepare_step.main(["--dataset", a.dataset, "--task", a.task, "--split", split, "--positive-threshold",
                                    a.positive_threshold, "--seed", a.seed, "--tie-break", a.tie_break])
        uris = [f"runs:/{run_id}/data"]
    for uri in uris:
        run_peers(uri, a.threads, only, a.recbole_python)


if __name__ == "__main__":
    main()
