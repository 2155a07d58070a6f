"""Accuracy on real ML-100K, averaged over seeds: the README's results table.

    python bench/accuracy.py --task rating   --models global_mean,popularity,mf,ncf,fm,wide_deep,dcn,dcnv2,autoint
    python bench/accuracy.py --task implicit --models popularity,mf,ncf

rating: random 80/10/10, test RMSE. implicit: leave_last_out, every rating a positive
(positive_threshold=1), full-ranking test NDCG@10 / HR@10 and sampled HR@10 (99 stored negatives).
Defaults from configs/ (tuned on the validation split only). Prints a markdown table.
"""

import argparse
import time

import numpy as np
from _common import ml100k, prep

from recsys import config, evaluation, training

p = argparse.ArgumentParser()
p.add_argument("--task", default="rating")
p.add_argument("--models", default="global_mean,mf")
p.add_argument("--seeds", default="42,43,44")
p.add_argument("--set", nargs="*", default=[], help="key=value overrides for every model")
a = p.parse_args()

raw = ml100k()
seeds = [int(s) for s in a.seeds.split(",")]
overrides = dict(kv.split("=", 1) for kv in a.set)
keys = ["test/rmse", "test/mae"] if a.task == "rating" else ["test/ndcg_at_10", "test/hr_at_10", "test/sampled_hr_at_10"]
datasets = {}
for s in seeds:
    kw = dict(task="rating", split="random") if a.task == "rating" else dict(task="implicit", split="leave_last_out",
                                                                             positive_threshold=1)
    datasets[s] = prep.prepare(raw, seed=s, **kw)
rows = []
for name in a.models.split(","):
    vals, val_scores, secs = {k: [] for k in keys}, [], []
    for s in seeds:
        hp, cfg = config.load(name, overrides={**overrides, "seed": s}, task=a.task)
        t0 = time.perf_counter()
        r = training.fit(datasets[s], name, hp, cfg)
        secs.append(time.perf_counter() - t0)
        val_scores.append(r.best_score)
        ev = evaluation.evaluate(r.module, datasets[s], "test", [10], "both")
        for k in keys:
            vals[k].append(ev.metrics[k])
    rows.append([name, *[f"{np.mean(vals[k]):.4f} ± {np.std(vals[k]) / np.sqrt(len(seeds)):.4f}" for k in keys],
                 f"{np.mean(val_scores):.4f}", f"{np.mean(secs):.1f}"])
    print("| " + " | ".join(rows[-1]) + " |", flush=True)
print()
print(f"ML-100K, task {a.task}, seeds {seeds} (mean ± standard error over seeds)")
print("| model | " + " | ".join(keys) + " | validation | train s |")
print("|" + "---|" * (len(keys) + 3))
for r in rows:
    print("| " + " | ".join(r) + " |")
