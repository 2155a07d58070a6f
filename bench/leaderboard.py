"""The README's results tables: every model, every seed, the peers beside, one report.

    python bench/leaderboard.py [--experiment results] [--seeds 42,43,44]

Into one experiment: `mlflow run . -P task=rating` with all nine models, and `-P task=implicit
-P positive_threshold=1` with the eight models that rank under `tie_break=item_id` and under
`tie_break=random`, once per seed (the three streams, `--parallel` at a time); then
`bench/peers.py --all` (the libraries on each of those very splits); then `mlflow run . -e report`,
whose markdown is printed and is what the README shows. Runs against $MLFLOW_TRACKING_URI (default
./mlflow.db) from a clean clone of HEAD, so the runs record a clean commit.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
p = argparse.ArgumentParser()
p.add_argument("--experiment", default="results")
p.add_argument("--seeds", default="42,43,44")
p.add_argument("--rating-models", default="global_mean,popularity,mf,ncf,fm,wide_deep,dcn,dcnv2,autoint")
p.add_argument("--implicit-models", default="popularity,mf,ncf,fm,wide_deep,dcn,dcnv2,autoint")
p.add_argument("--random-tie-models", default="popularity,mf,ncf,fm,wide_deep,dcn,dcnv2,autoint",
               help="implicit models for the random tie rule ('' drops the stream)")
p.add_argument("--parallel", type=int, default=2, help="streams (rating; implicit per tie rule) run at once")
a = p.parse_args()

env = {**os.environ}
env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")
with tempfile.TemporaryDirectory() as tmp:
    clone = Path(tmp) / "recsys"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)

    def mlflow_run(*params, entry="main"):
        cmd = [sys.executable, "-m", "mlflow", "run", str(clone), "-e", entry, "--env-manager", "local",
               "--experiment-name", a.experiment]
        for kv in params:
            cmd += ["-P", kv]
        print("$", " ".join(cmd[2:]), flush=True)
        # from the working directory, so a new experiment's artifacts land in ./mlruns beside ./mlflow.db
        # (from the temporary clone's folder they would be deleted with it)
        subprocess.run(cmd, env=env, check=True)

    seeds = a.seeds.split(",")
    streams = [[("task=rating", f"models={a.rating_models}", f"seed={s}") for s in seeds]] + [
        [("task=implicit", "positive_threshold=1", f"tie_break={tie}", f"models={models}", f"seed={s}")
         for s in seeds] for tie, models in (("item_id", a.implicit_models), ("random", a.random_tie_models))]
    # an empty model list drops its stream: e.g. `--implicit-models "" --random-tie-models ""` re-runs
    # the rating table only, into an experiment whose other tables stay as they are (the report takes
    # the newest run of each model and seed)
    streams = [st for st, models in zip(streams, (a.rating_models, a.implicit_models, a.random_tie_models)) if models]
    # streams never share a prepare run (task or tie rule differ), so they can run side by side; the
    # store's tables are created first (two processes creating a fresh SQLite store race in MLflow)
    subprocess.run([sys.executable, "-c", "import mlflow; mlflow.search_experiments()"], env=env, check=True)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(a.parallel) as pool:
        list(pool.map(lambda stream: [mlflow_run(*params) for params in stream], streams))
    subprocess.run([sys.executable, str(ROOT / "bench" / "peers.py"), "--experiment", a.experiment, "--all"],
                   env=env, check=True)
    mlflow_run(f"experiment={a.experiment}", entry="report")
