"""prepare speed and memory.

    python bench/prepare.py [--ratings 25000095] [--skip-large]

1. ml-100k from the cache to a logged `data/` artifact (the prepare step in-process, tracking to a
   temporary sqlite store): seconds, against reading the raw ratings file alone with pandas.
2. Synthetic data shaped like ML-25M (162,541 users, 59,047 items, 25,000,095 ratings) written as a real
   `ratings.csv` (not timed), then prepared for the implicit task with leave_last_out and saved, in a
   child process so its peak RSS is its own: seconds, rows/s and peak RSS, against a bare pyarrow
   read of the same CSV. Targets: ml-100k under 5 s; the 25M prepare under 90 s and 8 GiB.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import ml100k

p = argparse.ArgumentParser()
p.add_argument("--ratings", type=int, default=25_000_095)
p.add_argument("--users", type=int, default=162_541)
p.add_argument("--items", type=int, default=59_047)
p.add_argument("--skip-large", action="store_true")
p.add_argument("--child", default="")
a = p.parse_args()

if a.child:  # the measured child: parse + prepare + save one folder
    from recsys.data import prepare as prep

    t0 = time.perf_counter()
    raw = prep.load_raw(a.child)
    t1 = time.perf_counter()
    data = prep.prepare(raw, task="implicit", split="leave_last_out", seed=42)
    t2 = time.perf_counter()
    prep.save(data, Path(a.child).parent / "out" / "data")
    t3 = time.perf_counter()
    print(f"parse {t1 - t0:.1f}s, prepare {t2 - t1:.1f}s, save {t3 - t2:.1f}s; {prep.summary(data, 'synthetic-25m')}")
    sys.exit(0)

ml100k()  # make sure the cache is warm; not timed
with tempfile.TemporaryDirectory() as tmp:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    from recsys.data import sources
    from steps import prepare as step

    folder = next(p for p in (sources.cache_dir() / "ml-100k", sources.cache_dir() / "ml-100k-recbole") if p.exists())
    raw_file = next(f for f in (folder / "u.data", folder / "ml-100k.inter") if f.exists())
    t = time.perf_counter()
    pd.read_csv(raw_file, sep="\t")
    ref = time.perf_counter() - t
    step.main(["--dataset", "ml-100k", "--task", "implicit", "--split", "leave_last_out"])  # warm-up (first sqlite use)
    t = time.perf_counter()
    step.main(["--dataset", "ml-100k", "--task", "implicit", "--split", "leave_last_out"])
    secs = time.perf_counter() - t
print(f"ml-100k cache -> logged artifact: {secs:.2f}s (target < 5 s); reading {raw_file.name} alone: {ref:.3f}s; "
      f"ratio {secs / ref:.0f}x")

if a.skip_large:
    sys.exit(0)
from recsys.data import synthetic  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp) / "ml-25m-shaped"
    t = time.perf_counter()
    synthetic.write_ratings_csv(folder, a.users, a.items, a.ratings, seed=0)
    print(f"wrote {a.ratings:,} ratings as ratings.csv in {time.perf_counter() - t:.0f}s (not counted)", flush=True)
    import pyarrow.csv as pcsv

    t = time.perf_counter()
    pcsv.read_csv(folder / "ratings.csv")
    ref = time.perf_counter() - t
    t = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", str(folder / "ratings.csv")], capture_output=True, text=True)
    secs = time.perf_counter() - t
    if out.returncode:
        sys.exit(out.stderr[-2000:])
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(out.stdout.strip())
    print(f"25M implicit leave_last_out prepare: {secs:.1f}s (target < 90 s), {a.ratings / secs:,.0f} rows/s, "
          f"peak RSS {rss:.2f} GiB (target < 8); bare pyarrow CSV read {ref:.1f}s, ratio {secs / ref:.1f}x")
