"""Serving figures: `/invocations` latency and throughput beside in-process `predict`, and batch recommend.

    python bench/serve.py [--requests 200]

Trains mf (1 epoch) on real ML-100K into a temporary store, starts `mlflow models serve` on a free
loopback port, and measures, for top-10 of one user and of a 1,000-user batch: p50 / p99 latency and
requests/s, sequential and with 8 concurrent clients (a bounded number of requests), beside the same
calls to the in-process pyfunc `predict` in the same run (the ratio is the HTTP + JSON overhead).
Then `recommend` (the blocked batch path) for all ML-100K users and for a 6,040 x 3,706 synthetic set.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

p = argparse.ArgumentParser()
p.add_argument("--requests", type=int, default=200)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000, q))


def timed(fn, n, clients):
    lat = []

    def one(_):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    t0 = time.perf_counter()
    if clients == 1:
        lat = [one(i) for i in range(n)]
    else:
        with ThreadPoolExecutor(clients) as ex:
            lat = list(ex.map(one, range(n)))
    return lat, n / (time.perf_counter() - t0)


tmp = Path(tempfile.mkdtemp(prefix="recsys-serve-bench-"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
import mlflow  # noqa: E402

from _common import served  # noqa: E402
from steps import prepare as prepare_step  # noqa: E402
from steps import recommend as recommend_step  # noqa: E402
from steps import train as train_step  # noqa: E402

try:
    data = prepare_step.main(["--dataset", "ml-100k"])
    train = train_step.main(["--data", f"runs:/{data}/data", "--epochs", "1", "--min_epochs", "0",
                             "--threads", str(a.threads)])
    uri = f"runs:/{train}/model"
    model = mlflow.pyfunc.load_model(uri)
    users = list(model.unwrap_python_model().bundle.user_index)
    with served(uri, tmp) as (server, port):
        def http(batch):
            body = json.dumps({"dataframe_split": {"columns": ["user"], "data": [[u] for u in batch]},
                               "params": {"k": 10}}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                r.read()

        batch = (users * 2)[:1000]
        print("| request | path | clients | p50 ms | p99 ms | requests/s | rows/s |")
        print("|---|---|---|---|---|---|---|")
        for label, rows in (("top-10, 1 user", users[:1]), ("top-10, 1,000 users", batch)):
            n = a.requests if len(rows) == 1 else max(20, a.requests // 10)
            frame = pd.DataFrame({"user": rows})
            ref, ref_rps = timed(lambda: model.predict(frame, params={"k": 10}), n, 1)
            print(f"| {label} | in-process predict | 1 | {pct(ref, 50):.1f} | {pct(ref, 99):.1f} | {ref_rps:.0f} | "
                  f"{ref_rps * len(rows):,.0f} |")
            for clients in (1, 8):
                lat, rps = timed(lambda: http(rows), n, clients)
                print(f"| {label} | HTTP /invocations | {clients} | {pct(lat, 50):.1f} | {pct(lat, 99):.1f} | "
                      f"{rps:.0f} | {rps * len(rows):,.0f} |  (p50 ratio to in-process {pct(lat, 50) / pct(ref, 50):.1f}x)")

    t = time.perf_counter()
    run = recommend_step.main(["--model-uri", uri, "--k", "10"])
    m = mlflow.get_run(run).data.metrics
    print(f"recommend ML-100K: {int(m['users']):,} users, {m['recommend_seconds']:.2f}s ranking "
          f"({time.perf_counter() - t:.1f}s with loading and logging)")
    data = prepare_step.main(["--dataset", "synthetic", "--n-users", "6040", "--n-items", "3706", "--n-ratings",
                              "1000000"])
    train = train_step.main(["--data", f"runs:/{data}/data", "--epochs", "1", "--min_epochs", "0",
                             "--batch_size", "1024", "--threads", str(a.threads)])
    t = time.perf_counter()
    run = recommend_step.main(["--model-uri", f"runs:/{train}/model", "--k", "10"])
    m = mlflow.get_run(run).data.metrics
    print(f"recommend 6,040 x 3,706 synthetic: {int(m['users']):,} users, {m['recommend_seconds']:.2f}s ranking "
          f"({m['users'] / m['recommend_seconds']:,.0f} users/s; {time.perf_counter() - t:.1f}s with loading and logging)")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
