"""Evaluate a trained model on a prepared split: accuracy, beyond-accuracy and segment metrics.

Protocols (see README): rating rows are scored as given; the implicit task ranks each user's held-out
items against every item the user has not interacted with (full ranking: test excludes the user's
train and val items, val excludes train items), and, as the
sampled protocol, against the 99 negatives stored with the data. What is known of a user before the
split (their history, whether they are cold, the cold-start answer) is recsys/data/known.py's, the
definition serving applies too: cold rows are counted and answered by it, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recsys import metrics, ranking, scoring
from recsys.data import known as known_
from recsys.data.artifact import Prepared
from recsys.errors import RecsysError
from recsys.schema import ITEM, RANKING, RANKING_K, RATING, USER

ACTIVITY_BUCKETS = [(0, 20, "lt20"), (20, 101, "20to100"), (101, np.inf, "gt100")]


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_user: pd.DataFrame
    top_items: np.ndarray | None = None  # [n_users_evaluated, K] for the implicit task
    users: np.ndarray | None = None
    predictions: pd.DataFrame | None = None  # rating task: actual vs predicted rows


def setup_tags(meta: dict, split: str, protocol: str, eval_users: int = 0) -> dict:
    """What makes two evaluations comparable: same data (dataset, task, split, tie rule, threshold) and
    the same protocol (a sample of `eval_users` users is a protocol of its own). The report groups runs
    by these tags and never ranks across groups."""
    task = meta["task"]
    if eval_users and task == "implicit":
        protocol = f"{protocol}@{eval_users}users"
    return {"dataset": meta.get("name", ""), "task": task, "data_split": meta["split"],
            "tie_break": meta.get("tie_break", "text") if meta["split"] == "leave_last_out" else "-",
            "positive_threshold": f"{meta['positive_threshold']:g}" if task == "implicit" else "-",
            "protocol": f"{meta['split']}/rating" if task == "rating" else f"{meta['split']}/{protocol}",
            "eval_split": split, "data_seed": meta.get("seed", ""), "content_hash": meta["content_hash"]}


def sample_size(data: Prepared, split: str, eval_users: int) -> int:
    """`eval_users` as evaluated: 0 (every user, the full protocol) when the sample would hold every user
    of the split, so a run that ranked everyone is never filed under a sampled protocol."""
    if eval_users < 0:
        raise RecsysError(f"eval_users={eval_users} must be >= 0 (0 = every user)")
    return 0 if eval_users >= data.split(split)[USER].nunique() else eval_users


def bucket(counts: np.ndarray) -> np.ndarray:
    out = np.empty(len(counts), dtype=object)
    for lo, hi, name in ACTIVITY_BUCKETS:
        out[(counts >= lo) & (counts < hi)] = name
    return out


def evaluate(module, data: Prepared, split: str = "test", ks=(5, 10, 20), protocol: str = "both",
             eval_users: int = 0) -> Evaluation:
    """`eval_users` > 0 (implicit): rank for a seeded sample of that many of the split's users (the
    data's seed picks them, so every model evaluated on the same data gets the same users), for
    catalogues where full ranking for everyone would take hours; 0 = every user."""
    if split not in ("val", "test"):
        raise RecsysError(f"split={split!r} must be test or val")
    if eval_users < 0:
        raise RecsysError(f"eval_users={eval_users} must be >= 0 (0 = every user)")
    if data.meta["task"] == "rating":
        if eval_users:
            raise RecsysError("eval_users samples users to rank and applies to the implicit task; ratings are "
                              "scored for every test row (leave it at 0)")
        return _rating(module, data, split)
    return _implicit(module, data, split, list(ks), protocol, eval_users)


def _train_stats(data: Prepared):
    tr = data.train
    user_counts = np.bincount(tr[USER], minlength=data.n_users)
    item_counts = np.bincount(tr[ITEM], minlength=data.n_items)
    return tr, user_counts, item_counts


def rating_per_user(u: np.ndarray, pred: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Per user: rows n, RMSE and MAE of the predictions (what the report's and registry's tests read)."""
    df = pd.DataFrame({USER: u, "err2": (pred - y) ** 2, "abs": np.abs(pred - y)})
    return df.groupby(USER).agg(n=("err2", "size"), rmse=("err2", lambda s: float(np.sqrt(s.mean()))),
                                mae=("abs", "mean")).reset_index()


def _rating(module, data: Prepared, split: str) -> Evaluation:
    tr, user_counts, item_counts = _train_stats(data)
    rows = data.split(split)
    u, i, y = rows[USER].to_numpy(np.int64), rows[ITEM].to_numpy(np.int64), rows[RATING].to_numpy(np.float64)
    known = known_.before(data, split)
    pred, fallback = scoring.pair_scores(module, known, u, i)
    cold = fallback != ""
    base = np.full(len(y), known.global_mean)
    p = f"{split}/"
    m = {f"{p}rmse": metrics.rmse(pred, y), f"{p}mae": metrics.mae(pred, y), f"{p}r2": metrics.r2(pred, y),
         f"{p}baseline_rmse": metrics.rmse(base, y), f"{p}rating_std": float(np.std(y)),
         f"{p}n_rows": len(y), f"{p}n_cold_rows": int(cold.sum())}
    m[f"{p}rmse_improvement"] = 1 - m[f"{p}rmse"] / m[f"{p}baseline_rmse"]
    if cold.any():
        m[f"{p}cold/rmse"] = metrics.rmse(pred[cold], y[cold])
    b = bucket(user_counts[u])
    for _, _, name in ACTIVITY_BUCKETS:
        sel = (b == name) & ~cold
        if sel.any():
            m[f"{p}activity_{name}/rmse"] = metrics.rmse(pred[sel], y[sel])
            m[f"{p}activity_{name}/n_rows"] = int(sel.sum())
    per_user = rating_per_user(u, pred, y)
    per_user["train_ratings"] = user_counts[per_user[USER]]
    per_user["activity"] = bucket(per_user["train_ratings"].to_numpy())
    preds = pd.DataFrame({USER: u, ITEM: i, "actual": y, "predicted": pred, "cold": cold})
    return Evaluation(m, per_user, predictions=preds)


def _implicit(module, data: Prepared, split: str, ks: list[int], protocol: str, eval_users: int = 0) -> Evaluation:
    if protocol not in ("full", "sampled", "both"):
        raise RecsysError(f"protocol={protocol!r} must be full, sampled or both")
    tr, user_counts, item_counts = _train_stats(data)
    rows = data.split(split)
    model = module.model
    known = known_.before(data, split)
    model.set_known(known)  # a model that reads a history reads what came before the split
    every = np.unique(rows[USER].to_numpy(np.int64))
    users = ranking.sample_users(every, eval_users, data.meta.get("seed", 0) or 0)
    if len(users) < len(every):
        rows = rows[rows[USER].isin(users)]
    targets = ranking.CSR.build(rows[USER].to_numpy(np.int64), rows[ITEM].to_numpy(np.int64), data.n_users).padded(users)
    exclude, popularity = known.items, known.ranking_fallback()
    cold = known.cold(users, model.answers_histories)
    p = f"{split}/"
    m: dict[str, float] = {f"{p}n_users": len(users), f"{p}n_cold_users": int(cold.sum()),
                           f"{p}n_cold_items": int((item_counts[rows[ITEM].to_numpy()] == 0).sum())}
    per_user = pd.DataFrame({USER: users, "train_items": user_counts[users], "activity": bucket(user_counts[users]),
                             "cold": cold})
    tops = None
    kmax = max(ks)
    if protocol in ("full", "both"):
        ranks, tops = ranking.rank_targets(model, users, targets, exclude, data.n_items, k=kmax,
                                           fallback=popularity, cold=cold)
        m.update(metrics.ranking_report(ranks, ks, p))
        for k in ks:
            per_user[f"hr_at_{k}"] = (ranks <= k).any(1).astype(float)
        per_user[RANKING.metric] = metrics.ndcg_per_user(ranks, RANKING_K)
        per_user["best_rank"] = ranks.min(1)
        for _, _, name in ACTIVITY_BUCKETS:
            sel = per_user["activity"].to_numpy() == name
            if sel.any():
                m[f"{p}activity_{name}/{RANKING.metric}"] = metrics.ndcg(ranks[sel], RANKING_K)
                m[f"{p}activity_{name}/hr_at_{RANKING_K}"] = metrics.hit_rate(ranks[sel], RANKING_K)
                m[f"{p}activity_{name}/n_users"] = int(sel.sum())
        # beyond accuracy, for the model and for the popularity baseline beside it
        k10 = min(10, kmax)
        top10 = tops[:, :k10]
        pop_top = _popularity_topk(popularity, exclude, users, k10)
        n_train_users = int((user_counts > 0).sum())
        for name, t in (("", top10), ("popularity/", pop_top)):
            m[f"{p}{name}coverage_at_{k10}"] = metrics.coverage(t, data.n_items)
            m[f"{p}{name}novelty_at_{k10}"] = metrics.novelty(t, item_counts, n_train_users)
            m[f"{p}{name}popularity_percentile_at_{k10}"] = metrics.popularity_percentile(t, item_counts)
    if protocol in ("sampled", "both") and data.negatives is not None:
        negs = data.negatives.groupby(USER)[ITEM].apply(np.asarray)
        has = rows[USER].isin(negs.index).to_numpy()
        ru, ri = rows[USER].to_numpy(np.int64)[has], rows[ITEM].to_numpy(np.int64)[has]
        if len(ru):
            neg = np.stack(negs.loc[ru].to_numpy())
            sr = ranking.sampled_ranks(model, ru, ri, neg).astype(float)[:, None]
            m[f"{p}sampled_hr_at_{RANKING_K}"] = metrics.hit_rate(sr, RANKING_K)
            m[f"{p}{RANKING.sampled}"] = metrics.ndcg(sr, RANKING_K)
            pos = ranking.score_pairs(model, ru, ri)
            negu = np.unique(ru)
            negm = np.stack(negs.loc[negu].to_numpy())
            negscore = ranking.score_pairs(model, np.repeat(negu, negm.shape[1]), negm.reshape(-1))
            m[f"{p}auc"] = metrics.auc(pos, negscore)
            prob = 1 / (1 + np.exp(-np.concatenate([pos, negscore]).astype(np.float64)))
            m[f"{p}log_loss"] = metrics.log_loss(prob, np.r_[np.ones(len(pos)), np.zeros(len(negscore))])
    return Evaluation(m, per_user, top_items=tops, users=users)


def _popularity_topk(scores: torch.Tensor, exclude: ranking.CSR, users: np.ndarray, k: int) -> np.ndarray:
    """Each user's top-k of one score per item ([n_items]) among the items not excluded for them, in
    blocks of users (ML-25M: 162k users x 59k items would be a 38 GB matrix at once)."""
    block = max(1, (1 << 24) // max(len(scores), 1))
    out = np.zeros((len(users), min(k, len(scores))), dtype=np.int64)
    for start in range(0, len(users), block):
        u = users[start:start + block]
        s = scores.expand(len(u), -1).clone()
        rows, items = exclude.pairs(u)
        s[torch.as_tensor(rows), torch.as_tensor(items)] = -torch.inf
        out[start:start + len(u)] = s.topk(k, dim=1).indices.numpy()
    return out


def examples_markdown(module, data: Prepared, n_users: int = 5, k: int = 10, seed: int = 0) -> str:
    """Top-k with titles and years for a few users, beside what they rated highest in training."""
    tr = data.train
    counts = np.bincount(tr[USER], minlength=data.n_users)
    candidates = np.flatnonzero(counts >= 5)
    users = np.sort(np.random.default_rng(seed).choice(candidates, min(n_users, len(candidates)), replace=False))
    exclude = ranking.CSR.build(tr[USER].to_numpy(np.int64), tr[ITEM].to_numpy(np.int64), data.n_users)
    _, tops = ranking.rank_targets(module.model, users, np.full((len(users), 1), -1), exclude, data.n_items, k=k)
    items = data.items

    def name(i: int) -> str:
        row = items.iloc[int(i)]
        title = row.get("title") if "title" in items else None
        year = row.get("year") if "year" in items else None
        title = title if isinstance(title, str) and title else f"item {row['raw_id']}"
        return f"{title} ({int(year)})" if year is not None and not pd.isna(year) else title

    held = data.test.groupby(USER)[ITEM].apply(list)
    lines = [f"# Example recommendations ({data.meta.get('name', 'data')}, task {data.meta['task']})", "",
             "Top-10 unseen items per user beside the items they rated highest in training; items the "
             "user rated in the test split are marked with *.", ""]
    for u, top in zip(users, tops):
        liked = tr[tr[USER] == u].sort_values([RATING, ITEM], ascending=[False, True]).head(k)
        test_items = set(held.get(u, []))
        lines += [f"## user {data.users['raw_id'].iloc[u]} ({counts[u]} training ratings)", "",
                  "| # | recommended | rated highest in training |", "|---|---|---|"]
        for j in range(k):
            rec = f"{name(top[j])}{' *' if top[j] in test_items else ''}" if j < len(top) else ""
            like = f"{name(liked[ITEM].iloc[j])} ({liked[RATING].iloc[j]:g})" if j < len(liked) else ""
            lines.append(f"| {j + 1} | {rec} | {like} |")
        lines.append("")
    return "\n".join(lines)
