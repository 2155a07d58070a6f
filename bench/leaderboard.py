"""The README's results tables: every model, every seed, the peers beside, one report.

    python bench/leaderboard.py [--experiment results] [--seeds 42,43,44]

Into one experiment: `mlflow run . -P task=rating` with all nine models, and `-P task=implicit
-P positive_threshold=1` with popularity, mf and ncf under both tie rules, once per seed; then
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
p.add_argument("--implicit-models", default="popularity,mf,ncf")
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
        subprocess.run(cmd, env=env, check=True, cwd=tmp)

    for seed in a.seeds.split(","):
        mlflow_run("task=rating", f"models={a.rating_models}", f"seed={seed}")
        for tie in ("item_id", "random"):
            mlflow_run("task=implicit", "positive_threshold=1", f"tie_break={tie}", f"models={a.implicit_models}",
                       f"seed={seed}")
    subprocess.run([sys.executable, str(ROOT / "bench" / "peers.py"), "--experiment", a.experiment, "--all"],
                   env=env, check=True)
    mlflow_run(f"experiment={a.experiment}", entry="report")
