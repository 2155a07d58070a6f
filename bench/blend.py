"""The blend against its members over seeds: test metric of each, and the paired difference to the best
single model (chosen on validation), with its standard error.

    python bench/blend.py [--task rating] [--models mf,fm,ncf] [--seeds 42,43,44,45,46]

Per seed, against a fresh sqlite store: `mlflow run . -P models=...` (prepare, train, evaluate each),
`mlflow run . -e blend -P runs=<that main run>`, `mlflow run . -e evaluate` of the blend. Then, on each
seed's test split, the blend and the member with the best validation metric are scored through the
same evaluator: rating, the per-rating difference of squared errors; implicit, the per-user NDCG@10
difference (from each evaluate run's per_user.parquet). Prints mean ± sd (ddof=1) over seeds per model
and the paired difference, mean over seeds ± its standard error (ddof=1 over the pooled units / seeds).
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(ROOT))
p = argparse.ArgumentParser()
p.add_argument("--task", default="rating", choices=("rating", "implicit"))
p.add_argument("--models", default="mf,fm,ncf")
p.add_argument("--seeds", default="42,43,44,45,46")
a = p.parse_args()
extra = [] if a.task == "rating" else ["-P", "task=implicit", "-P", "positive_threshold=1"]


def mlflow_run(env, cwd, *params):
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", *params]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")


def main():
    import mlflow

    from recsys import ranking, tracking
    from recsys.data import prepare as prep
    from recsys.schema import ITEM, RATING, TASKS, USER

    spec = TASKS[a.task]
    tests, diffs, chosen = {}, [], []
    for seed in a.seeds.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            uri = f"sqlite:///{tmp}/mlflow.db"
            env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
            mlflow_run(env, tmp, "-P", "dataset=ml-100k", "-P", f"models={a.models}", "-P", f"seed={seed}", *extra)
            mlflow.set_tracking_uri(uri)
            runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
            main_run = next(r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "main")
            mlflow_run(env, tmp, "-e", "blend", "-P", f"runs={main_run.info.run_id}")
            blend = next(r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                         if r.data.tags.get("step") == "blend")
            mlflow_run(env, tmp, "-e", "evaluate", "-P", f"model_uri=runs:/{blend.info.run_id}/model")
            runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
            evals = {r.data.tags["train_run_id"]: r for r in runs if r.data.tags.get("step") == "evaluate"}
            trains = [r for r in runs if r.data.tags.get("step") == "train"]
            val = f"best_{spec.key('val').replace('/', '_')}"
            best = (min if spec.mode == "min" else max)(trains, key=lambda r: r.data.metrics[val])
            chosen.append(best.data.tags["model"])
            for r in [*trains, blend]:
                tests.setdefault(r.data.tags["model"] if r is not blend else "blend",
                                 []).append(evals[r.info.run_id].data.metrics[spec.key("test")])
            if a.task == "rating":  # per rating: the same test pairs through both scorers
                data = prep.load(tracking.download(blend.data.tags["data_uri"], "data", Path(tmp) / "d"))
                te = data.test
                u, i, y = te[USER].to_numpy(), te[ITEM].to_numpy(), te[RATING].to_numpy(np.float64)
                err = {}
                for name, rid in (("blend", blend.info.run_id), ("best", best.info.run_id)):
                    scorer = tracking.load_bundle(f"runs:/{rid}/model", Path(tmp) / rid).module
                    err[name] = (ranking.score_pairs(scorer, u, i) - y) ** 2
                diffs.append(err["blend"] - err["best"])
            else:
                per = {}
                for name, rid in (("blend", blend.info.run_id), ("best", best.info.run_id)):
                    local = tracking.download_file(evals[rid].info.run_id, "per_user.parquet", Path(tmp) / f"pu-{name}")
                    import pandas as pd

                    per[name] = pd.read_parquet(local).set_index(USER)["ndcg_at_10"]
                diffs.append((per["blend"] - per["best"]).dropna().to_numpy())
    print(f"{a.task}, models {a.models}, seeds {a.seeds}: test {spec.metric}, mean ± sd over seeds (ddof=1)")
    for name, v in tests.items():
        print(f"  {name:>8}: {np.mean(v):.4f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.4f} (n={len(v)})  {v}")
    per_seed = np.array([d.mean() for d in diffs])
    unit = "squared error per rating" if a.task == "rating" else "NDCG@10 per user"
    pooled = np.concatenate(diffs)
    se_units = pooled.std(ddof=1) / np.sqrt(len(pooled))
    se_seeds = per_seed.std(ddof=1) / np.sqrt(len(per_seed)) if len(per_seed) > 1 else float("nan")
    print(f"best single model on validation per seed: {chosen}")
    print(f"paired blend - best ({unit}): {per_seed.mean():+.5f}, se over {len(pooled)} pooled units {se_units:.5f}, "
          f"se over {len(per_seed)} seeds {se_seeds:.5f}; per seed {np.round(per_seed, 5).tolist()}")


main()
