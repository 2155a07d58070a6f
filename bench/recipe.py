"""A next-item recipe change against the shipped config, seed by seed, on real ML-100K (implicit,
leave_last_out, positive_threshold 1, random ties): validation and test NDCG@10 of each, and the paired
per-user test difference with its standard error.

    python bench/recipe.py [--models gru4rec,sasrec] [--seeds 42,43,44] [--base exclude_seen=false]
                           [--change exclude_seen=true] [--parallel 2] [--save FILE | --load FILE]
                           [--against-experiment sequence]

Each (model, seed, arm) is one process: prepare with that seed, `training.fit` with the shipped config
plus the arm's overrides (and that seed), then `evaluate`'s evaluator on val and test, full ranking. The
change is judged on validation (the protocol's rule); test is shown beside it, paired per user: mean
over seeds ± its standard error (ddof=1 over the pooled users, and over seeds), and each model's change
against every other model's base, paired the same way. Also prints each arm's
training seconds (one torch thread; with --parallel 2 two fits share the 2 cores). `--against-experiment`
pairs the test evaluations of an experiment in $MLFLOW_TRACKING_URI (e.g. the one `bench/leaderboard.py`
made docs/sequence.md from: the shipped models and their blend) against each base arm, on the same splits.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
USER = "user"  # recsys.schema.USER: per_user.parquet's user column


def one(model: str, seed: int, overrides: list[str], out: Path) -> None:
    import importlib

    from _common import ml100k, prep

    from recsys import config, evaluation
    from recsys.schema import USER

    fit = importlib.import_module("recsys.training.fit")
    data = prep.prepare(ml100k(), task="implicit", split="leave_last_out", positive_threshold=1, seed=seed,
                        tie_break="random")
    hp, cfg = config.load(model, task="implicit", n_items=data.n_items,
                          overrides={"seed": str(seed), **dict(kv.split("=", 1) for kv in overrides)})
    res = fit.fit(data, model, hp, cfg)
    row = {"seconds": res.seconds, "epochs": res.epochs}
    for split in ("val", "test"):
        ev = evaluation.evaluate(res.module, data, split=split, ks=(10,), protocol="full")
        row[split] = ev.metrics[f"{split}/ndcg_at_10"]
        row[f"{split}_users"] = ev.per_user[USER].tolist()
        row[f"{split}_ndcg"] = ev.per_user["ndcg_at_10"].tolist()
    out.write_text(json.dumps(row))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="gru4rec,sasrec")
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--base", default="exclude_seen=false", help="comma-separated key=value: the reference arm")
    p.add_argument("--change", default="exclude_seen=true", help="comma-separated key=value: the arm judged")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--save", help="also write every fit's figures (and per-user NDCG) to this JSON file")
    p.add_argument("--load", help="no fits: the figures a --save wrote")
    p.add_argument("--against-experiment", metavar="NAME",
                   help="also pair the test evaluations of that experiment's models (random ties, seeds as above, in "
                        "$MLFLOW_TRACKING_URI; e.g. docs/sequence.md's, blend included) against each base arm")
    a = p.parse_args()
    arms = {"base": [kv for kv in a.base.split(",") if kv], "change": [kv for kv in a.change.split(",") if kv]}
    jobs = [(m, int(s), arm) for m in a.models.split(",") for s in a.seeds.split(",") for arm in arms]
    if a.load:
        res = {(m, s, arm): row for m, s, arm, row in json.loads(Path(a.load).read_text())}
    else:
        res = fit_all(a, arms, jobs)
    report(a, arms, res)
    if a.against_experiment:
        against(a, res)


def fit_all(a, arms: dict, jobs: list) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        def run(job):
            m, s, arm = job
            out = Path(tmp) / f"{m}-{s}-{arm}.json"
            r = subprocess.run([sys.executable, __file__, "--one", m, str(s), out, *arms[arm]], capture_output=True,
                               text=True)
            if r.returncode:
                sys.exit(f"{m} seed {s} {arm} failed:\n{r.stderr[-3000:]}")
            return job, json.loads(out.read_text())

        with ThreadPoolExecutor(a.parallel) as pool:
            res = dict(pool.map(run, jobs))
    if a.save:
        Path(a.save).write_text(json.dumps([[*job, row] for job, row in res.items()]))
    return res


def report(a, arms: dict, res: dict) -> None:
    print(f"real ML-100K, implicit, leave_last_out, threshold 1, random ties; base: {a.base}; change: {a.change}")
    print("| model | arm | val NDCG@10 by seed | test NDCG@10 by seed | test mean ± sd | train s (mean) |")
    print("|---|---|---|---|---|---|")
    for m in a.models.split(","):
        for arm in arms:
            rows = [res[(m, int(s), arm)] for s in a.seeds.split(",")]
            test = np.array([r["test"] for r in rows])
            vals = " ".join(f"{r['val']:.4f}" for r in rows)
            print(f"| {m} | {arm} | {vals} | {' '.join(f'{t:.4f}' for t in test)} "
                  f"| {test.mean():.4f} ± {test.std(ddof=1) if len(test) > 1 else 0:.4f} "
                  f"| {np.mean([r['seconds'] for r in rows]):.0f} |")
    print()
    seeds = a.seeds.split(",")
    for m in a.models.split(","):
        paired(res, seeds, (m, "change"), (m, "base"))
        gains = [res[(m, int(s), "change")]["val"] - res[(m, int(s), "base")]["val"] for s in seeds]
        print(f"{m}: change - base on validation NDCG@10, per seed {', '.join(f'{x:+.4f}' for x in gains)}")
    for m in a.models.split(","):  # each model's change against the other models' base (today's configs)
        for other in a.models.split(","):
            if other != m:
                paired(res, seeds, (m, "change"), (other, "base"))


def against(a, res: dict) -> None:
    """Each model of the experiment (its newest finished test evaluation per seed, random ties) minus each
    base arm, paired per user on the same split."""
    import mlflow
    import pandas as pd

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    runs = mlflow.search_runs(experiment_names=[a.against_experiment], output_format="list",
                              filter_string="tags.step = 'evaluate' and attributes.status = 'FINISHED' and "
                                            "tags.tie_break = 'random' and tags.eval_split = 'test' and "
                                            "tags.data_split = 'leave_last_out'",
                              order_by=["attributes.start_time DESC"])
    newest = {}
    for r in runs:
        if "@" in r.data.tags.get("protocol", ""):  # a sample of users is another protocol
            continue
        newest.setdefault((r.data.tags.get("model"), str(r.data.tags.get("seed"))), r)
    for model in sorted({m for m, _ in newest}):
        seeds = a.seeds.split(",")
        if not all((model, s) in newest for s in seeds):
            continue
        for s in seeds:  # in the bench's user order (every base arm of a seed holds the same users)
            pu = pd.read_parquet(mlflow.artifacts.download_artifacts(
                run_id=newest[(model, s)].info.run_id, artifact_path="per_user.parquet")).set_index(USER)
            users = res[(a.models.split(",")[0], int(s), "base")]["test_users"]
            if sorted(pu.index) != sorted(users):
                sys.exit(f"{model} seed {s} was evaluated on other users than this bench's split")
            res[(model, int(s), "run")] = {"test_users": users, "test_ndcg": pu["ndcg_at_10"].loc[users].tolist()}
        for base in a.models.split(","):
            paired(res, seeds, (model, "run"), (base, "base"), f"{model} ({a.against_experiment})")


def paired(res: dict, seeds: list[str], x: tuple, y: tuple, label: str = "") -> None:
    per_seed, pooled = [], []
    for s in seeds:
        a, b = res[(x[0], int(s), x[1])], res[(y[0], int(s), y[1])]
        assert a["test_users"] == b["test_users"]
        d = np.array(a["test_ndcg"]) - np.array(b["test_ndcg"])
        pooled.append(d)
        per_seed.append(d.mean())
    pooled = np.concatenate(pooled)
    print(f"{label or f'{x[0]} {x[1]}'} - {y[0]} {y[1]}: test NDCG@10 per user {np.mean(per_seed):+.4f}, se "
          f"{pooled.std(ddof=1) / np.sqrt(len(pooled)):.4f} over {len(pooled):,} pooled users, se "
          f"{np.std(per_seed, ddof=1) / np.sqrt(len(per_seed)) if len(per_seed) > 1 else float('nan'):.4f} over "
          f"{len(per_seed)} seeds (per seed {', '.join(f'{v:+.4f}' for v in per_seed)})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        one(sys.argv[2], int(sys.argv[3]), sys.argv[5:], Path(sys.argv[4]))
    else:
        main()
