"""Training losses, by name: each takes the model, a batch and the squashing of raw scores into the
task's predictions, and returns a scalar. `BATCHES` says what a batch must hold for each."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.errors import RecsysError
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


def softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy over the whole catalogue: no sampling (models that score it in one product)."""
    return F.cross_entropy(model.score_matrix(batch["user_id"]), batch["item_id"])  # logits [B, n_items]


LOSSES = {"mse": mse, "bce": bce, "bpr": bpr, "sampled_softmax": sampled_softmax, "softmax": softmax}
BATCHES = {"mse": POINTWISE, "bce": POINTWISE, "bpr": PAIRS, "sampled_softmax": LISTS, "softmax": POSITIVES}
IMPLICIT_ONLY = {"bce", "bpr", "sampled_softmax", "softmax"}


def resolve(loss: str, task: str, model_cls) -> str:
    """The loss a run trains with (auto: mse for ratings, bce for implicit), or a one-line error."""
    name = loss if loss != "auto" else ("mse" if task == "rating" else "bce")
    if name not in LOSSES:
        raise RecsysError(f"loss={loss!r} is not one of auto, {', '.join(LOSSES)}")
    if name in IMPLICIT_ONLY and task != "implicit":
        raise RecsysError(f"loss={name} needs task=implicit data; use loss=auto (mse) for ratings")
    if name == "softmax" and not model_cls.scores_catalogue:
        raise RecsysError("loss=softmax scores the whole catalogue and needs a model that scores it in one product "
                          "(mf); use sampled_softmax (against num_negatives sampled items), bce or bpr")
    return name
