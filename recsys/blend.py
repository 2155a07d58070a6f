"""Fitting a blend of finished models (recsys/models/blend.py), its weights on validation only.

- rating: the members' predicted ratings combined by ridge regression with non-negative weights (an
  unpenalised intercept; the ridge strength chosen by 5-fold cross-validation on the validation ratings):
  a member can be left out, never subtracted;
- implicit: the members' per-user standardised scores summed with weights on the simplex, chosen on
  validation's ranking headline (schema.RANKING). Each member scores the validation users once, in
  blocks, into recsys/blend_search.py's store of what each target's rank depends on (memory that does
  not grow with the catalogue); every candidate weighting is then ranked from it. Up to GRID_MEMBERS members every point of a 0.1 grid is tried; above
  that, greedy ensemble selection with replacement (Caruana et al., ICML 2004: `step` of weight at a
  time to the member that helps most), whose cost grows linearly with the number of members.
  Members that read a history read what is known before validation (recsys/data/known.py: train items),
  as evaluation ranks validation; the served blend is given everything known, as any served model is.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch
from scipy.optimize import nnls

from recsys import evaluation, ranking
from recsys.blend_search import FOLDS, GRID_MEMBERS, RankStore, greedy_simplex, search_weights, simplex_grid, user_folds
from recsys.data import known
from recsys.errors import RecsysError
from recsys.models import build_model
from recsys.models.blend import Blend, standardise
from recsys.schema import ITEM, RANKING, RATING, USER
from recsys.scoring import Scorer

MAX_MEMBERS = 16  # members one blend takes (the greedy search's cost grows with them)
MIN_ROWS = 4 * FOLDS  # validation ratings (warm pairs) or users the weights are fitted on, at least: each of the
# FOLDS cross-fitting folds then fits on 16 and is judged on 4


def ridge_weights(predictions: np.ndarray, target: np.ndarray, alphas=(0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
                  folds: int = 5, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """(weights >= 0, intercept, alpha): ridge regression of `target` on the members' `predictions` [n, m]
    (centred, intercept unpenalised, non-negative weights: NNLS on the ridge-augmented system), alpha
    chosen by `folds`-fold cross-validated MSE."""
    n, m = predictions.shape
    fold = np.random.default_rng(seed).permutation(n) % folds

    def fit(x, y, alpha):
        mx, my = x.mean(0), y.mean()
        a = np.vstack([x - mx, np.sqrt(alpha) * np.eye(m)])
        w, _ = nnls(a, np.concatenate([y - my, np.zeros(m)]))
        return w, my - mx @ w

    def cv(alpha):
        err = 0.0
        for f in range(folds):
            w, b = fit(predictions[fold != f], target[fold != f], alpha)
            err += float(((predictions[fold == f] @ w + b - target[fold == f]) ** 2).sum())
        return err / n

    alpha = min(alphas, key=cv)
    w, b = fit(predictions, target, alpha)
    return w, float(b), float(alpha)


OOF_FILE = "oof_per_user.parquet"  # a blend run's out-of-fold per-user validation table (evaluation's layout)


def _printed(done: int, total: int, best: float) -> None:
    print(f"blend: weight search {done}/{total} candidates ranked, best validation {RANKING.label} so far {best:.4f}",
          file=sys.stderr, flush=True)


def _rating(blend: Blend, scorers: list[Scorer], data, seed: int) -> dict:
    """Ridge weights on the validation ratings, and their out-of-fold predictions (folds by user). Rows
    evaluation answers with its cold-start answer (recsys/data/known.py: a cold user or item) are answered
    so here, and left out of the fit: no weight changes them."""
    va = data.val
    u, i, y = va[USER].to_numpy(np.int64), va[ITEM].to_numpy(np.int64), va[RATING].to_numpy(np.float64)
    cold, mean = known.before(data, "val").cold_rating(u, i)
    _enough(int((~cold).sum()), "validation ratings of users and items seen in training")
    x = np.stack([ranking.score_pairs(s, u, i).astype(np.float64) for s in scorers], 1)
    fold = user_folds(u, FOLDS, seed)
    oof = mean.copy()
    for f in range(FOLDS):
        fit_on, held = (fold != f) & ~cold, (fold == f) & ~cold
        if held.any() and fit_on.any():
            w, b, _ = ridge_weights(x[fit_on], y[fit_on])
            oof[held] = np.clip(x[held] @ w + b, blend.lo, blend.hi)
    w, b, alpha = ridge_weights(x[~cold], y[~cold])
    blend.weights.copy_(torch.as_tensor(w, dtype=torch.float32))
    blend.bias = b
    # the fitted blend's prediction from the members' already scored ones (its forward: the weighted sum,
    # squashed into the rating range)
    inside = np.where(cold, mean, np.clip(x @ w + b, blend.lo, blend.hi))
    x[cold] = mean[cold, None]  # each member as evaluation scores it
    rmse = lambda p: float(np.sqrt(np.mean((p - y) ** 2)))  # noqa: E731
    return {"weights": list(w), "bias": b, "alpha": alpha, "members": [rmse(x[:, j]) for j in range(x.shape[1])],
            "in_sample": rmse(inside), "out_of_fold": rmse(oof),
            "per_user": evaluation.rating_per_user(u, oof, y)}


def _enough(n: int, what: str) -> None:
    if n < MIN_ROWS:
        raise RecsysError(f"a blend's weights are fitted and cross-fitted on at least {MIN_ROWS} {what}; this "
                          f"data has {n}: prepare more data (or a split with a larger validation share) to blend")


def fit(scorers: list[Scorer], data, max_users: int = 10_000, progress=_printed) -> tuple[Scorer, dict]:
    """The blend of trained `scorers` on `data` as a scorer, its weights fitted on the validation split
    only, and what the fit found: weights, bias, the ridge alpha, each member's validation metric, the
    blend's in-sample validation metric (a training score of its weights), its cross-fitted (out-of-fold)
    one, which is its evidence, and the out-of-fold per-user table (evaluation's layout)."""
    task, va, meta = data.meta["task"], data.val, data.meta
    seed = int(meta.get("seed", 0) or 0)
    blend = build_model("blend", data.n_users, data.n_items, members=[s.hparams for s in scorers],
                        weights=[1.0] * len(scorers), bias=0.0, task=task, rating_min=meta["rating_min"],
                        rating_max=meta["rating_max"])
    for member, s in zip(blend.members, scorers):
        member.load_state_dict(s.model.state_dict())
    scorer = Scorer(blend, task, meta["rating_min"], meta["rating_max"]).eval()
    if task == "rating":
        return scorer, _rating(blend, scorers, data, seed)
    users = ranking.sample_users(np.unique(va[USER].to_numpy(np.int64)), max_users, seed)
    _enough(len(users), "validation users")
    targets = ranking.CSR.build(va[USER].to_numpy(np.int64), va[ITEM].to_numpy(np.int64), data.n_users).padded(users)
    before_val = known.before(data, "val")
    blend.set_known(before_val)  # validation is ranked from the history before it, as evaluation ranks it
    store = RankStore(blend, users, targets, before_val.items, data.n_items, cold=before_val.cold(
        users, blend.answers_histories), fallback=before_val.ranking_fallback())
    w, inside, oof = search_weights(store, len(blend.members), progress=progress, seed=seed, users=users)
    alone = [float(store.ndcg_per_user(np.eye(len(blend.members))[j]).mean()) for j in range(len(blend.members))]
    blend.weights.copy_(torch.as_tensor(w, dtype=torch.float32))
    return scorer, {"weights": list(w), "bias": 0.0, "alpha": float("nan"), "members": alone, "in_sample": inside,
                    "out_of_fold": float(oof.mean()), "per_user": pd.DataFrame({USER: users, RANKING.metric: oof}),
                    "store_bytes": store.nbytes}


def verdict(found: dict, mode: str, share: float = 0.95) -> str:
    """Whether a fitted blend earns its row: "" when it does; else why not (its weights put `share` or
    more on one member, or its out-of-fold validation metric does not beat its best member's)."""
    w = np.abs(np.asarray(found["weights"], dtype=float))
    if w.sum() > 0 and w.max() / w.sum() >= share:
        return f"degenerate: {w.max() / w.sum():.0%} of its weight on one member"
    best = min(found["members"]) if mode == "min" else max(found["members"])
    better = found["out_of_fold"] < best if mode == "min" else found["out_of_fold"] > best
    return "" if better else "not better than its best member out of fold"


def checkpoint(blend: Blend, n_users: int, n_items: int) -> dict:
    """The weights-only checkpoint of a fitted blend, in the layout `scoring.load_scorer` reads."""
    hp = blend.hparams()
    return {"hyper_parameters": {"model_name": "blend", "n_users": n_users, "n_items": n_items, "features": {},
                                 "task": hp["task"], "rating_min": hp["rating_min"], "rating_max": hp["rating_max"],
                                 "model_hparams": hp},
            "state_dict": {f"model.{k}": v for k, v in blend.state_dict().items()}}


def check_members(members: list[dict]) -> None:
    """Members to blend: at least two distinct runs (at most MAX_MEMBERS), all on the same data and task."""
    ids = [m["run_id"] for m in members]
    twice = sorted({r for r in ids if ids.count(r) > 1})
    if twice:
        raise RecsysError(f"run {twice[0]} is listed more than once; list each train run once (a blend of a "
                          "model with itself is that model)")
    if len(members) < 2:
        raise RecsysError(f"a blend needs at least two finished train runs; got {len(members)}")
    if len(members) > MAX_MEMBERS:
        raise RecsysError(f"a blend takes at most {MAX_MEMBERS} runs (the weight search's cost grows with each); "
                          f"got {len(members)}: blend the best {MAX_MEMBERS}")
    hashes = {m["content_hash"] for m in members}
    if len(hashes) > 1:
        raise RecsysError("the runs were trained on different data (content hashes "
                          f"{', '.join(sorted(h[:12] for h in hashes))}); blend runs trained on one prepare run's data")
    tasks = {m["task"] for m in members}
    if len(tasks) > 1:
        raise RecsysError(f"the runs are of different tasks ({', '.join(sorted(tasks))}); blend runs of one task")


def member_keys(members: list[dict]) -> list[str]:
    """One metric-key suffix per member that cannot collide: its model and its run id's first 8 characters."""
    return [f"{m['model']}.{m['run_id'][:8]}" for m in members]


__all__ = ["FOLDS", "GRID_MEMBERS", "MAX_MEMBERS", "RankStore", "check_members", "checkpoint", "fit", "greedy_simplex",
           "member_keys", "ridge_weights", "search_weights", "simplex_grid", "standardise", "user_folds"]
