"""EASE's fit memory against the estimate it prints (recsys/models/ease.py `fit_bytes`), measured in the
same run: the process's peak resident memory during the fit over what it held just before.

    python bench/ease_memory.py --items 12000 --users 30000 --nnz 2000000

Prints the estimate, the measured growth of the peak RSS, and their ratio (1.0 = the estimate is exact;
the issue's bound is within 25%). Linux only: it resets the peak with /proc/self/clear_refs.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.models import build_model  # noqa: E402
from recsys.models.ease import fit_bytes  # noqa: E402


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=12_000)
    ap.add_argument("--users", type=int, default=30_000)
    ap.add_argument("--nnz", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    # a popularity-skewed catalogue, as real data is: a dense-ish Gram matrix among the popular items
    item = np.minimum((rng.pareto(1.2, a.nnz) * a.items / 50).astype(np.int64), a.items - 1)
    user = rng.integers(0, a.users, a.nnz)
    model = build_model("ease", a.users, a.items, l2=100.0)
    u, i = torch.as_tensor(user), torch.as_tensor(item)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current RSS
    before = rss("VmRSS")
    t = time.perf_counter()
    model.fit(u, i, torch.ones(a.nnz), "implicit", None)
    seconds = time.perf_counter() - t
    grew = rss("VmHWM") - before
    est = fit_bytes(a.items)
    print(f"ease fit: {a.items:,} items, {a.users:,} users, {a.nnz:,} interactions, {seconds:.1f} s")
    print(f"estimate {est / 2 ** 30:.3f} GiB, measured peak growth {grew / 2 ** 30:.3f} GiB, "
          f"measured / estimate = {grew / est:.2f}")


if __name__ == "__main__":
    main()
