"""Re-check candidate configurations on validation over several data seeds, before one is applied.

    python bench/recheck.py --model fm [--task rating] [--seeds 42,43,44] [--training-seed config|data]
                            [--candidate "lr=0.001 epochs=9" ...]

A sweep ranks trials on one seed's validation split, and on ML-100K that score moves by up to 0.005
RMSE between neighbouring configurations, so the sweep's best is partly luck. This trains the model's
shipped config (the first candidate) and each `--candidate` (overrides of it, space-separated
key=value) on the ML-100K splits of every seed (training seed fixed at the config's, or with
`--training-seed data` each split's own seed, as the pipeline trains; `tie_break=item_id` makes the
same split on every seed, so there only the training seed can vary and `data` is required),
and prints each one's validation metric per seed and its mean ± sd (ddof=1). Test is never looked at.
In-process, no MLflow runs; `--threads` torch threads.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from _common import ml100k  # noqa: E402

from recsys import config, training  # noqa: E402
from recsys.data import prepare as prep  # noqa: E402
from recsys.errors import RecsysError  # noqa: E402
from recsys.schema import TASKS  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--task", default="rating", choices=["rating", "implicit"])
p.add_argument("--seeds", default="42,43,44")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--tie-break", default="random", help="implicit: leave_last_out's tie rule (every rating a positive)")
p.add_argument("--candidate", action="append", default=[], help='overrides, e.g. "lr=0.001 epochs=9"')
p.add_argument("--training-seed", default="config", choices=["config", "data"],
               help="config: the config's seed on every split; data: each split's seed (as the pipeline)")
a = p.parse_args()
if a.task == "implicit" and a.tie_break == "item_id" and a.training_seed == "config":
    p.error("with --tie-break item_id every seed makes the same split; pass --training-seed data so the runs differ")
candidates = {}  # label -> overrides, every one checked before anything trains
for text in ["", *a.candidate]:
    if any("=" not in kv for kv in text.split()):
        p.error(f"--candidate {text!r}: write overrides as key=value, e.g. \"lr=0.001 epochs=9\"")
    overrides = dict(kv.split("=", 1) for kv in text.split())
    try:
        config.load(a.model, None, overrides, task=a.task)
    except RecsysError as e:
        p.error(str(e))
    candidates[" ".join(text.split()) or "(shipped config)"] = overrides

raw = ml100k()
seeds = [int(s) for s in a.seeds.split(",")]
splits = {s: prep.prepare(raw, task="rating", split="random", seed=s) if a.task == "rating" else
          prep.prepare(raw, task="implicit", split="leave_last_out", positive_threshold=1, tie_break=a.tie_break, seed=s)
          for s in seeds}
print(f"{a.model} {a.task}: validation {TASKS[a.task].key('val')} over seeds {a.seeds}")
for label, overrides in candidates.items():
    hp, cfg = config.load(a.model, None, {"threads": a.threads, **overrides}, task=a.task)
    scores, t0 = [], time.perf_counter()
    for s in seeds:
        seeded = cfg if a.training_seed == "config" else cfg.model_copy(update={"seed": s})
        scores.append(training.fit(splits[s], a.model, hp, seeded).best_score)
    v = np.array(scores)
    print(f"  {label}: {' '.join(f'{x:.4f}' for x in v)} -> mean {v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}"
          f" ({time.perf_counter() - t0:.0f} s)", flush=True)
