"""Rating, classification and ranking metrics as small pure functions on NumPy arrays.

Ranking metrics take `ranks`: [n_users, R] 1-based ranks of each user's relevant items (np.inf for
padding or an item never ranked), as produced by `ranking.rank_targets` (pessimistic ties). Every
function returns the mean over users; a user with no relevant items is the caller's to exclude.
Edge cases: K <= 0 is an error; a user whose relevant items all fall outside the top K scores 0.
"""

from __future__ import annotations

import numpy as np

from recsys.values import integers


# --- rating ---------------------------------------------------------------------------------------
def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, float) - true) ** 2))) if len(true) else float("nan")


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - true))) if len(true) else float("nan")


def r2(pred: np.ndarray, true: np.ndarray) -> float:
    """1 - SSE/SST; 0 for predicting the mean of `true`, negative when worse. NaN when `true` is constant."""
    true = np.asarray(true, float)
    sst = np.sum((true - true.mean()) ** 2)
    return float(1 - np.sum((np.asarray(pred, float) - true) ** 2) / sst) if sst > 0 else float("nan")


# --- classification -------------------------------------------------------------------------------
def auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """P(score of a random positive > a random negative); ties count one half (Mann-Whitney U)."""
    pos, neg = np.asarray(pos_scores, float), np.asarray(neg_scores, float)
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def log_loss(prob: np.ndarray, label: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(prob, float), eps, 1 - eps)
    return float(-np.mean(label * np.log(p) + (1 - label) * np.log(1 - p))) if len(p) else float("nan")


# --- ranking --------------------------------------------------------------------------------------
def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"K must be a positive integer, got {k!r}")


def _n_relevant(ranks: np.ndarray) -> np.ndarray:
    """Relevant items per user (padding is inf), at least 1 so ratios stay defined."""
    return np.maximum(np.isfinite(ranks).sum(1), 1)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """1 if any relevant item is in the top K."""
    _check_k(k)
    return float(np.mean((ranks <= k).any(1)))


def precision(ranks: np.ndarray, k: int) -> float:
    _check_k(k)
    return float(np.mean((ranks <= k).sum(1) / k))


def recall(ranks: np.ndarray, k: int) -> float:
    _check_k(k)
    return float(np.mean((ranks <= k).sum(1) / _n_relevant(ranks)))


def ndcg_per_user(ranks: np.ndarray, k: int) -> np.ndarray:
    """Binary-relevance NDCG@K per user: sum 1/log2(rank+1) over hits, over the ideal for min(R, K) items."""
    _check_k(k)
    gain = np.where(ranks <= k, 1.0 / np.log2(np.minimum(ranks, k) + 1), 0.0).sum(1)
    ideal_n = np.minimum(_n_relevant(ranks), k)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[ideal_n - 1]
    return gain / ideal


def ndcg(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(ndcg_per_user(ranks, k)))


def mrr(ranks: np.ndarray, k: int) -> float:
    """Reciprocal rank of the first relevant item, 0 when it is below K."""
    _check_k(k)
    best = ranks.min(1)
    return float(np.mean(np.where(best <= k, 1.0 / best, 0.0)))


def average_precision(ranks: np.ndarray, k: int) -> float:
    """MAP@K: mean over hits of (hits at or above that rank / rank), over min(R, K)."""
    _check_k(k)
    r = np.sort(ranks, 1)
    hit = r <= k
    prec_at_hit = np.where(hit, np.cumsum(hit, 1) / np.where(hit, r, 1), 0.0)
    return float(np.mean(prec_at_hit.sum(1) / np.minimum(_n_relevant(ranks), k)))


RANKING = {"hr": hit_rate, "precision": precision, "recall": recall, "ndcg": ndcg, "mrr": mrr, "map": average_precision}


def ranking_report(ranks: np.ndarray, ks: list[int], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{name}_at_{k}": fn(ranks, k) for k in ks for name, fn in RANKING.items()}


# --- beyond accuracy ------------------------------------------------------------------------------
def coverage(top_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one top-K list."""
    return float(len(np.unique(top_items)) / n_items) if n_items else float("nan")


def novelty(top_items: np.ndarray, item_counts: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(p_i) of recommended items, p_i = share of users who had item i."""
    p = np.maximum(item_counts[top_items], 1) / max(n_users, 1)
    return float(np.mean(-np.log2(p)))


def popularity_percentile(top_items: np.ndarray, item_counts: np.ndarray) -> float:
    """Mean percentile (0-100, 100 = most popular) of recommended items' training popularity."""
    pct = 100.0 * item_counts.argsort().argsort() / max(len(item_counts) - 1, 1)
    return float(np.mean(pct[top_items]))


def parse_ks(text) -> list[int]:
    return integers("k", text, 1)
