"""Training losses, by name: each takes the model, a batch and the squashing of raw scores into the
task's predictions, and returns a scalar. `BATCHES` says what a batch must hold for each."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.schema import LOSS_NAMES, SEQUENCE_LOSS_NAMES
from recsys.training.batches import LISTS, PAIRS, POINTWISE, POSITIVES


def mse(model, batch, squash) -> torch.Tensor:
    """Squared error of the prediction (a rating, or P(positive) for implicit labels)."""
    return F.mse_loss(squash(model(batch["user_id"], batch["item_id"])), batch["target"])


def bce(model, batch, squash) -> torch.Tensor:
    """Binary cross-entropy of positives (1) against sampled negatives (0)."""
    return F.binary_cross_entropy_with_logits(model(batch["user_id"], batch["item_id"]), batch["target"])


def bpr(model, batch, squash) -> torch.Tensor:
    """Bayesian personalised ranking (Rendle et al. 2009): a positive above a sampled negative."""
    pos = model(batch["user_id"], batch["item_id"])
    neg = model(batch["user_id"], batch["neg_item_id"])
    return -F.logsigmoid(pos - neg).mean()


def sampled_softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy of each positive against its own sampled negatives, in one forward."""
    user, neg = batch["user_id"], batch["neg_item_id"]  # [B], [B, K]
    b, k = neg.shape
    raw = model(torch.cat([user, user.repeat_interleave(k)]), torch.cat([batch["item_id"], neg.flatten()]))
    logits = torch.cat([raw[:b, None], raw[b:].view(b, k)], 1)  # [B, 1 + K], the positive in column 0
    return F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=logits.device))


def rows(table: torch.nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
    """table[idx], with a sparse gradient (only those rows) where the table is updated row by row."""
    return F.embedding(idx, table.weight, sparse=table.sparse)


def _shared_softmax(pos, negs, neg, target, log_q, leave_out=None) -> torch.Tensor:
    """Cross-entropy of each positive logit [P] against the shared negatives' logits [P, N], each minus
    the log of its item's sampling probability (the log-Q correction: Yi et al., RecSys 2019), so the
    sampled softmax estimates the full one; a negative that is the row's own target is masked, and so
    is one where `leave_out` [P, N] is true."""
    pos = pos[:, None] - log_q[target, None]  # [P, 1]
    masked = neg[None, :] == target[:, None]
    if leave_out is not None:
        masked = masked | leave_out
    negs = (negs - log_q[neg][None, :]).masked_fill(masked, float("-inf"))  # [P, N]
    logits = torch.cat([pos, negs], 1)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def catalogue_sampled_softmax(model, batch, squash) -> torch.Tensor:
    """The softmax over the catalogue estimated from `negatives` shared by the batch, drawn by popularity
    (a model that scores the catalogue as <user, item> + item bias: mf). One [B, N] product instead of
    [B, n_items]; the item bias is part of each logit, the user's terms cancel in a softmax."""
    user, item, neg = batch["user_id"], batch["item_id"], batch["negatives"]  # [B], [B], [N]
    p = rows(model.user, user)  # [B, d]
    pos = (p * rows(model.item, item)).sum(-1) + rows(model.item_bias, item).squeeze(-1)  # [B]
    negs = p @ rows(model.item, neg).T + rows(model.item_bias, neg).squeeze(-1)[None, :]  # [B, N]
    return _shared_softmax(pos, negs, neg, item, batch["log_q"].to(p.device))


def softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy over the whole catalogue: no sampling (models that score it in one product)."""
    return F.cross_entropy(model.score_matrix(batch["user_id"]), batch["item_id"])  # logits [B, n_items]


# --- sequence models: next-item prediction at every position of a window --------------------------
def _positions(model, batch):
    """The states at positions that have a next item, and those items (codes): [P, d], [P]."""
    h = model.encode(batch["seq"])  # [B, L, d]
    has = batch["next"] > 0
    return h[has], batch["next"][has] - 1


def seen_before(batch, target: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
    """[P, n_items] (or [P, N] for the item codes `items` [N]): which the user had before each target
    (`exclude_seen`); the target itself never counts (a repeat is still the answer)."""
    has = batch["next"] > 0
    first = batch["first_seen"] if items is None else batch["first_seen"][:, items]  # [B, n_items or N]
    mask = (first[:, None, :] < batch["place"][:, :, None])[has]  # [B, L, .], then [P, .]
    if items is not None:
        return mask & (items[None, :] != target[:, None])
    mask[torch.arange(len(target), device=mask.device), target] = False
    return mask


def sequence_softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy of the next item over the whole catalogue, at every position; with `exclude_seen`
    the items the user had before each target are left out of it (they are never ranked for the user)."""
    h, target = _positions(model, batch)
    logits = h @ model.catalogue().T  # [P, n_items]
    if "first_seen" in batch:
        logits = logits.masked_fill(seen_before(batch, target), float("-inf"))
    return F.cross_entropy(logits, target)


def sequence_sampled_softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy of the next item against negatives shared by the batch, drawn by popularity, with
    the log-Q correction (each logit minus the log of its item's sampling probability: Yi et al.,
    RecSys 2019), so the sampled softmax estimates the full one; a negative that is the target is masked."""
    h, target = _positions(model, batch)
    neg = batch["negatives"]  # [N] item codes
    pos = (h * rows(model.item, target + 1)).sum(-1)  # [P] (row 0 of the table is padding)
    negs = h @ rows(model.item, neg + 1).T  # [P, N]
    leave_out = seen_before(batch, target, neg) if "first_seen" in batch else None  # exclude_seen
    return _shared_softmax(pos, negs, neg, target, batch["log_q"].to(h.device), leave_out)


def sequence_bce(model, batch, squash) -> torch.Tensor:
    """SASRec's original loss: the next item (1) against one uniformly drawn item (0) at every position;
    with `exclude_seen` a drawn item the user had before that position is no negative (left out)."""
    h = model.encode(batch["seq"])
    has = batch["next"] > 0
    pos = (h * rows(model.item, batch["next"])).sum(-1)[has]
    negative = has
    if "first_seen" in batch:  # the drawn item's first place in the user's sequence, against the target's
        drawn_first = batch["first_seen"].gather(1, batch["neg_next"] - 1)  # [B, L]
        negative = has & ~((drawn_first < batch["place"]) & (batch["neg_next"] != batch["next"]))
    neg = (h * rows(model.item, batch["neg_next"])).sum(-1)[negative]
    return F.binary_cross_entropy_with_logits(torch.cat([pos, neg]), torch.cat([torch.ones_like(pos),
                                                                                 torch.zeros_like(neg)]))


SEQUENCE_LOSSES = {"softmax": sequence_softmax, "sampled_softmax": sequence_sampled_softmax, "bce": sequence_bce}

LOSSES = {"mse": mse, "bce": bce, "bpr": bpr, "sampled_softmax": sampled_softmax, "softmax": softmax}
if set(LOSSES) != set(LOSS_NAMES) or set(SEQUENCE_LOSSES) != set(SEQUENCE_LOSS_NAMES):  # the names config checks
    raise ImportError("recsys.training.losses: LOSSES / SEQUENCE_LOSSES differ from schema's loss names")
BATCHES = {"mse": POINTWISE, "bce": POINTWISE, "bpr": PAIRS, "sampled_softmax": LISTS, "softmax": POSITIVES}


def loss_function(name: str, model_cls):
    if getattr(model_cls, "uses_history", False):
        return SEQUENCE_LOSSES[name]
    if name == "sampled_softmax" and model_cls.scores_catalogue:
        return catalogue_sampled_softmax
    return LOSSES[name]


def shares_negatives(name: str, model_cls) -> bool:
    """Whether the loss draws negatives shared by a batch (by popularity, log-Q corrected) rather than
    negatives per positive: the sampled softmax of a model that scores the catalogue."""
    return name == "sampled_softmax" and bool(model_cls.scores_catalogue)


