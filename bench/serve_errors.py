"""What a client of the served model reads for each kind of bad request, and the server's memory after
an oversized body: the figures docs/serving.md quotes.

    python bench/serve_errors.py [--rows 2500000]

Trains mf (1 epoch) on real ML-100K into a temporary store, starts `mlflow models serve` on a free
loopback port, sends each bad request and prints its HTTP status, error code and message (the first
200 characters of each line, and the number of lines), then sends a body of `--rows` rows and prints
the time to the answer and the server processes' resident memory (VmRSS of every process in its
session) before and after.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
p = argparse.ArgumentParser()
p.add_argument("--rows", type=int, default=2_500_000)
a = p.parse_args()

tmp = Path(tempfile.mkdtemp(prefix="recsys-serve-errors-"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"

from _common import served  # noqa: E402
from steps import prepare as prepare_step  # noqa: E402
from steps import train as train_step  # noqa: E402


def post(port, body: bytes, content_type="application/json"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, {"message": text.decode(errors="replace")}


def rss_mb(session: int) -> float:
    total = 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.getsid(int(pid)) == session:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


try:
    data = prepare_step.main(["--dataset", "ml-100k"])
    train = train_step.main(["--data", f"runs:/{data}/data", "--epochs", "1", "--min_epochs", "0"])
    with served(f"runs:/{train}/model", tmp) as (server, port):
        rows = {"dataframe_split": {"columns": ["user"], "data": [["1"], ["2"]]}}
        cases = [("k=0", {**rows, "params": {"k": 0}}), ('k="abc"', {**rows, "params": {"k": "abc"}}),
                 ("k=2.5", {**rows, "params": {"k": 2.5}}), ("k=true", {**rows, "params": {"k": True}}),
                 ("a null user", {"dataframe_split": {"columns": ["user"], "data": [[None]]}}),
                 ("malformed JSON", b'{"dataframe_split": {"columns": ["user"], "data": [["1"]'),
                 ("an empty body", b"")]
        print("| request | status | error_code | lines | message (each line's first 200 characters) |")
        print("|---|---|---|---|---|")
        for name, body in cases:
            status, answer = post(port, body if isinstance(body, bytes) else json.dumps(body).encode())
            msg = str(answer.get("message", ""))
            lines = msg.splitlines() or [""]
            shown = " / ".join(line[:200] for line in lines).replace("|", "\\|")
            print(f"| {name} | {status} | {answer.get('error_code', '')} | {len(lines)} | {shown} |", flush=True)
        before = rss_mb(server.pid)
        body = json.dumps({"dataframe_split": {"columns": ["user"], "data": [[str(i % 943 + 1)] for i in range(a.rows)]}})
        t = time.perf_counter()
        status, answer = post(port, body.encode())
        took = time.perf_counter() - t
        print(f"\n{a.rows:,}-row body ({len(body) / 1e6:.0f} MB): HTTP {status} after {took:.1f}s "
              f"({str(answer.get('message', ''))[:120]}); server resident memory {before:.0f} MB before, "
              f"{rss_mb(server.pid):.0f} MB after")
        status, _ = post(port, json.dumps({**rows, "params": {"k": 2}}).encode())
        print(f"then a normal request: HTTP {status}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
