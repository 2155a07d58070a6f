"""The main pipeline end to end: a first `mlflow run .` against a second, fully reused one.

    python bench/pipeline.py [--models mf]

Runs `mlflow run . --env-manager local -P dataset=ml-100k` twice against a fresh sqlite store (the
ml-100k cache warm), prints both wall times and their ratio, and breaks the first run's time down from
the child runs it recorded: each step's wall time, the work inside it (prepare_seconds,
train_seconds, evaluation), the overhead between them (process start, imports, tracking), and the cost
of starting a Python process that imports each step.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ml100k

ROOT = Path(__file__).resolve().parents[1]
p = argparse.ArgumentParser()
p.add_argument("--models", default="mf")
a = p.parse_args()
ml100k()  # warm cache, not timed

with tempfile.TemporaryDirectory() as tmp:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "-P", "dataset=ml-100k",
           "-P", f"models={a.models}"]
    walls = []
    for _ in range(2):
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - t)
        if r.returncode:
            sys.exit(r.stderr[-3000:])
    reused = r.stdout.count("reused run")
    imports = {}
    for step in ("prepare", "train", "evaluate"):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import steps.{step}"], check=True, cwd=ROOT)
        imports[step] = time.perf_counter() - t

    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(search_all_experiments=True, order_by=["attributes.start_time ASC"], output_format="list")
    first_main = next(r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "main")
    print(f"first run {walls[0]:.1f}s, second run {walls[1]:.1f}s ({reused} steps reused): "
          f"ratio {walls[1] / walls[0]:.2f}")
    print("a Python process importing the step: " + ", ".join(f"{k} {v:.1f}s" for k, v in imports.items()))
    print("| step | wall s (launch to end) | run s | work s | overhead s |")
    print("|---|---|---|---|---|")
    prev_end = first_main.info.start_time
    for run in runs:
        if run.data.tags.get("mlflow.parentRunId") != first_main.info.run_id:
            continue
        wall = (run.info.end_time - prev_end) / 1000  # from the previous step's end: includes `mlflow run` startup
        own = (run.info.end_time - run.info.start_time) / 1000
        prev_end = run.info.end_time
        m = run.data.metrics
        work = m.get("prepare_seconds", m.get("train_seconds", m.get("evaluate_seconds", float("nan"))))
        label = run.data.tags["mlflow.project.entryPoint"] + (f" {run.data.tags['model']}" if "model" in run.data.tags else "")
        print(f"| {label} | {wall:.1f} | {own:.1f} | {work:.1f} | {wall - work:.1f} |")
