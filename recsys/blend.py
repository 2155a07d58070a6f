"""Blending finished models into one, with weights fitted on validation only.

- rating: the members' predicted ratings, combined by ridge regression (an intercept and one weight per
  member; the ridge strength chosen by 5-fold cross-validation on the validation ratings);
- implicit: each member's scores standardised per user over the catalogue (so members on different
  scales add up), summed with weights searched on validation NDCG@10 (a grid on the simplex). Members
  may be next-item (sequence) models: each then reads the history before the split it scores (train
  items for validation, as when it was trained), and the logged blend holds everything known of each
  user, as a logged sequence model does.

A `Blend` is an `nn.Module` like any model: it scores pairs and blocks of the catalogue, so evaluation,
serving and the registry take it as they take a trained model. Its members are inside it (their weights
and tables in its state), built from their own hyper-parameters (`build`).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from recsys import metrics, ranking
from recsys.errors import RecsysError
from recsys.models import build_model
from recsys.scoring import output, rating_range

NAME = "blend"  # the checkpoint's model_name of a blend (no registry entry: a blend is not trained)


class Blend(nn.Module):
    scores_catalogue = False
    scores_blocks = True
    uses_features = False
    closed_form = False
    uses_history = False  # per blend: True when a member is a sequence model (set_history passes it on)

    def __init__(self, members: list[nn.Module], weights: list[float], bias: float, task: str,
                 rating_min: float, rating_max: float, n_items: int):
        super().__init__()
        self.members, self.n_items = nn.ModuleList(members), n_items
        self.sequences = [m for m in members if getattr(m, "uses_history", False)]
        self.uses_history = bool(self.sequences)
        self.max_len = max((m.max_len for m in self.sequences), default=0)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.bias, self.task = float(bias), task
        self.lo, self.hi = rating_range(rating_min, rating_max)

    def _combine(self, raw: list[torch.Tensor]) -> torch.Tensor:
        if self.task == "rating":  # predicted ratings, blended, back to the logit the scorer squashes
            r = sum(w * output(x, "rating", self.lo, self.hi) for w, x in zip(self.weights, raw)) + self.bias
            p = ((r - self.lo) / (self.hi - self.lo)).clamp(1e-6, 1 - 1e-6)
            return torch.log(p) - torch.log1p(-p)
        return sum(w * x for w, x in zip(self.weights, raw))

    def set_history(self, history: torch.Tensor) -> None:
        """[n_users, max_len] (the longest member's): each sequence member reads its own latest columns."""
        for m in self.sequences:
            m.set_history(history[:, history.shape[1] - m.max_len:])

    def score_sequences(self, seq: torch.Tensor) -> torch.Tensor:
        """Histories given directly ([b, max_len], most recent last) -> [b, n_items]: a blend of sequence
        models only (a member that scores from the user id alone cannot read a history it was not given)."""
        if len(self.sequences) < len(self.members):
            pair = [type(m).__name__.lower() for m in self.members if m not in self.sequences]
            raise RecsysError(f"this blend holds {', '.join(pair)}, which recommend from the user id alone, so it "
                              "cannot answer a `history`; send the user id only")
        return self._combine([standardise(m.score_sequences(seq[:, seq.shape[1] - m.max_len:]).float())
                              for m in self.members])

    def score_block(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        raw = [ranking.score_block(m, users, n_items).float() for m in self.members]
        if self.task != "rating":
            raw = [standardise(x) for x in raw]
        return self._combine(raw)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        if self.task == "rating":
            return self._combine([m(user, item).float() for m in self.members])
        # a pair's score on its user's standardised scale: that user's scores over the catalogue
        uniq, inverse = torch.unique(user, return_inverse=True)
        block = self.score_block(uniq, self.n_items)
        return block[inverse, item]


def standardise(scores: torch.Tensor) -> torch.Tensor:
    """Per row (user): zero mean, unit standard deviation over the catalogue (a constant row stays 0)."""
    mean = scores.mean(1, keepdim=True)
    sd = scores.std(1, keepdim=True).clamp(min=1e-12)
    return (scores - mean) / sd


def build(hparams: dict) -> Blend:
    """A blend from its checkpoint's hyper-parameters (its members' own, then its weights)."""
    members = [build_model(m["model_name"], m["n_users"], m["n_items"], m["features"], **m["model_hparams"])
               for m in hparams["model_hparams"]["members"]]
    b = hparams["model_hparams"]
    return Blend(members, b["weights"], b["bias"], hparams["task"], hparams["rating_min"], hparams["rating_max"],
                 hparams["n_items"])


def checkpoint(blend: Blend, member_hparams: list[dict], n_users: int, n_items: int) -> dict:
    """The weights-only checkpoint of a blend, in the layout `scoring.load_scorer` reads."""
    hp = {"model_name": NAME, "n_users": n_users, "n_items": n_items, "features": {}, "task": blend.task,
          "rating_min": member_hparams[0]["rating_min"], "rating_max": member_hparams[0]["rating_max"],
          "model_hparams": {"members": member_hparams, "weights": [float(w) for w in blend.weights],
                            "bias": blend.bias}}
    return {"hyper_parameters": hp, "state_dict": {f"model.{k}": v for k, v in blend.state_dict().items()}}


def ridge_weights(predictions: np.ndarray, target: np.ndarray, alphas=(0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
                  folds: int = 5, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """(weights, intercept, alpha): ridge regression of `target` on the members' `predictions` [n, m]
    (centred, intercept unpenalised), alpha chosen by `folds`-fold cross-validated MSE."""
    n = len(target)
    fold = np.random.default_rng(seed).permutation(n) % folds

    def fit(x, y, alpha):
        mx, my = x.mean(0), y.mean()
        xc = x - mx
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
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


def simplex_grid(m: int, step: float = 0.1):
    """Weights >= 0 summing to 1, on a grid."""
    n = round(1 / step)
    for c in itertools.product(range(n + 1), repeat=m - 1):
        if sum(c) <= n:
            yield np.array([*c, n - sum(c)], dtype=np.float64) / n


class _Scores(nn.Module):
    """A fixed [users x items] score table as a model `ranking.rank_targets` can rank with."""
    scores_catalogue, scores_blocks = False, True

    def __init__(self, table: torch.Tensor, users: np.ndarray):
        super().__init__()
        self.register_buffer("table", table)
        self.users = users  # sorted user ids: the table's rows

    def score_block(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        return self.table[torch.as_tensor(np.searchsorted(self.users, users.cpu().numpy()))]


def search_weights(members: list[nn.Module], users: np.ndarray, targets: np.ndarray, exclude, n_items: int,
                   step: float = 0.1) -> tuple[np.ndarray, float]:
    """(weights, validation NDCG@10): the point of a grid on the simplex whose weighted sum of the
    members' standardised scores ranks the validation targets of `users` (sorted ids; targets [n, R],
    `exclude` the training items) best, by the evaluator's full ranking."""
    z = [standardise(ranking.score_block(m, torch.as_tensor(users), n_items).float()) for m in members]
    best, best_ndcg = None, -1.0
    for w in simplex_grid(len(members), step):
        table = _Scores(sum(float(wi) * zi for wi, zi in zip(w, z)), users)
        ranks, _ = ranking.rank_targets(table, users, targets, exclude, n_items)
        ndcg = metrics.ndcg(ranks, 10)
        if ndcg > best_ndcg + 1e-12:
            best, best_ndcg = w, ndcg
    return best, float(best_ndcg)


def fit(scorers: list, data, max_users: int = 10_000) -> tuple[Blend, dict]:
    """The blend of trained `scorers` (scoring.Scorer) on `data`, its weights fitted on the validation
    split only, and what the fit found (weights, bias, the ridge alpha, validation metric of the blend
    and of each member)."""
    from recsys.schema import ITEM, RATING, USER

    task, va, meta = data.meta["task"], data.val, data.meta
    models = [s.model for s in scorers]
    if task == "rating":
        u, i, y = va[USER].to_numpy(), va[ITEM].to_numpy(), va[RATING].to_numpy(np.float64)
        x = np.stack([ranking.score_pairs(s, u, i).astype(np.float64) for s in scorers], 1)
        w, b, alpha = ridge_weights(x, y)
        blend = Blend(models, list(w), b, task, meta["rating_min"], meta["rating_max"], data.n_items)
        scorer = type(scorers[0])(blend, task, meta["rating_min"], meta["rating_max"])
        rmse = lambda p: float(np.sqrt(np.mean((p - y) ** 2)))  # noqa: E731
        return blend, {"weights": list(w), "bias": b, "alpha": alpha, "val/rmse": rmse(ranking.score_pairs(scorer, u, i)),
                       "members": [rmse(x[:, j]) for j in range(len(scorers))]}
    users = ranking.sample_users(np.unique(va[USER].to_numpy(np.int64)), max_users, meta.get("seed", 0) or 0)
    targets = ranking.CSR.build(va[USER].to_numpy(np.int64), va[ITEM].to_numpy(np.int64), data.n_users).padded(users)
    tr = data.train
    exclude = ranking.CSR.build(tr[USER].to_numpy(np.int64), tr[ITEM].to_numpy(np.int64), data.n_users)
    blend = Blend(models, [1.0] * len(models), 0.0, task, meta["rating_min"], meta["rating_max"], data.n_items)
    from recsys import serving
    from recsys.data import history

    if blend.uses_history:  # validation is ranked from the train items alone, as in training
        blend.set_history(history.histories([tr], data.n_users, blend.max_len))
    w, ndcg = search_weights(models, users, targets, exclude, data.n_items)
    alone = [metrics.ndcg(ranking.rank_targets(m, users, targets, exclude, data.n_items)[0], 10) for m in models]
    blend.weights.copy_(torch.as_tensor(w, dtype=torch.float32))
    if blend.uses_history:  # the logged blend answers a known user from all of their history
        blend.set_history(history.histories([data.split(s) for s in serving.HISTORY_SPLITS], data.n_users,
                                             blend.max_len))
    return blend, {"weights": list(w), "bias": 0.0, "alpha": float("nan"), "val/ndcg_at_10": ndcg, "members": alone}


def check_members(members: list[dict]) -> None:
    """Members to blend: at least two, all on the same data and task."""
    if len(members) < 2:
        raise RecsysError(f"a blend needs at least two finished train runs; got {len(members)}")
    hashes = {m["content_hash"] for m in members}
    if len(hashes) > 1:
        raise RecsysError("the runs were trained on different data (content hashes "
                          f"{', '.join(sorted(h[:12] for h in hashes))}); blend runs trained on one prepare run's data")
    tasks = {m["task"] for m in members}
    if len(tasks) > 1:
        raise RecsysError(f"the runs are of different tasks ({', '.join(sorted(tasks))}); blend runs of one task")


__all__ = ["Blend", "build", "checkpoint", "check_members", "ridge_weights", "search_weights", "simplex_grid",
           "standardise"]
