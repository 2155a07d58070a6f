"""Full-ranking evaluation speed on ML-1M-sized data: blocked scoring vs a naive per-user loop.

    python bench/evaluate.py [--models mf,ncf,autoint] [--threads 1] [--naive-users 300]

Synthetic data shaped like ML-1M (6,040 users x 3,706 items, 1,000,209 ratings, every rating a
positive, leave_last_out). Times the `full` protocol of `recsys.evaluation.evaluate` (score every
user x item, mask training items, rank the held-out item, top-K) for each model with the shipped
config, and, in the same run, a per-user Python loop doing the same work on a sample of users.
Also, for models with their own `score_block` (each side's fields computed once), that path and one
forward per pair, back to back on the same users. Prints seconds, users/s and the speed-ups. Targets on 2 cores: mf < 5 s,
ncf and autoint < 60 s.
"""

import argparse
import time

import numpy as np
import torch
from _common import peak_rss_gib, prep

from recsys import config, evaluation, ranking, training
from recsys.data import features
from recsys.schema import ITEM, USER

p = argparse.ArgumentParser()
p.add_argument("--models", default="mf,ncf,fm,wide_deep,dcn,dcnv2,autoint")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--naive-users", type=int, default=300)
a = p.parse_args()
torch.set_num_threads(a.threads)

t0 = time.perf_counter()
raw = prep.load_raw("synthetic", 6040, 3706, 1_000_209, seed=1)
data = prep.prepare(raw, task="implicit", split="leave_last_out", positive_threshold=1, eval_negatives=99, seed=1)
print(f"data: {data.n_users:,} users x {data.n_items:,} items, {data.meta['n_interactions']:,} positives "
      f"(made in {time.perf_counter() - t0:.1f}s); {a.threads} torch thread(s)")
tables = features.build(data.users, data.items)
tr = data.train
seen = tr.groupby(USER)[ITEM].apply(np.asarray)


def naive(model, users):
    """What a per-user loop does: score all items for one user, mask, rank the target, top-10."""
    items = torch.arange(data.n_items)
    test = data.test.set_index(USER)[ITEM]
    t = time.perf_counter()
    with torch.no_grad():
        for u in users:
            s = model(torch.full((data.n_items,), int(u)), items).clone()
            s[torch.as_tensor(seen.get(u, np.zeros(0, dtype=np.int64)))] = -torch.inf
            _ = (s >= s[int(test[u])]).sum()
            _ = s.topk(10)
    return len(users) / (time.perf_counter() - t)


def scoring_rate(fn, model, users):
    """Users/s of one scoring path on `users`, in blocks of 64."""
    t = time.perf_counter()
    for s in range(0, len(users), 64):
        fn(model, torch.as_tensor(users[s:s + 64]), data.n_items)
    return len(users) / (time.perf_counter() - t)


print("| model | full ranking s | users/s | naive loop users/s | vs naive | own score_block users/s | per-pair users/s | "
      "score_block vs per-pair |")
print("|---|---|---|---|---|---|---|---|")
for name in a.models.split(","):
    hp, cfg = config.load(name, task="implicit")
    module = training.TrainingModule(model_name=name, n_users=data.n_users, n_items=data.n_items,
                                  features=tables.spec(), model_hparams=hp, task="implicit", rating_min=1.0,
                                  rating_max=5.0, lr=cfg.lr, weight_decay=0.0, optimizer="adam", scheduler="none",
                                  loss="bce", total_steps=1, net_weight_decay=0.0, bias_weight_decay=0.0).eval()
    if module.model.uses_features:
        module.model.set_tables(tables.user_cont, tables.user_cat, tables.item_cont, tables.item_cat)
    t = time.perf_counter()
    ev = evaluation.evaluate(module, data, "test", [10], "full")
    secs = time.perf_counter() - t
    n = ev.metrics["test/n_users"]
    users = data.test[USER].to_numpy()[:a.naive_users]
    nv = naive(module.model, users)
    row = f"| {name} | {secs:.2f} | {n / secs:,.0f} | {nv:,.0f} | {n / secs / nv:.1f}x |"
    if module.model.scores_blocks:  # the two scoring paths back to back on the same users
        fast = scoring_rate(ranking.score_block, module.model, users)
        slow = scoring_rate(ranking.score_block_pairs, module.model, users)
        row += f" {fast:,.0f} | {slow:,.0f} | {fast / slow:.2f}x |"
    else:
        row += " - | - | - |"
    print(row, flush=True)
print(f"peak RSS {peak_rss_gib():.2f} GiB")
