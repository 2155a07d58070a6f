"""Training losses, by name: each takes the model, a batch and the squashing of raw scores into the
task's predictions, and returns a scalar. `BATCHES` says what a batch must hold for each."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.schema import LOSS_NAMES, SEQUENCE_LOSS_NAMES
from recsys.training import fused
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


def rows_of(table: torch.nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
    """table[idx], with a sparse gradient (only those rows) where the table is updated row by row."""
    return F.embedding(idx, table.weight, sparse=table.sparse)


def catalogue_sampled_softmax(model, batch, squash) -> torch.Tensor:
    """The softmax over the catalogue estimated from `negatives` shared by the batch, drawn by popularity
    (a model that scores the catalogue as <user, item> + item bias: mf). One fused [B, N] product instead
    of [B, n_items]; the item bias is part of each logit, the user's terms cancel in a softmax."""
    user, item = batch["user_id"], batch["item_id"]
    return _sampled(rows_of(model.user, user), rows_of(model.item, item), item, batch["negatives"], model.item, 0,
                    batch["log_q"], bias=model.item_bias)


def softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy over the whole catalogue: no sampling (models that score it in one product)."""
    return F.cross_entropy(model.score_matrix(batch["user_id"]), batch["item_id"])  # logits [B, n_items]


# --- sequence models: next-item prediction at every position of a window --------------------------
def _positions(model, batch):
    """The states at positions that have a next item, and those items (codes): [P, d], [P]."""
    h = model.encode(batch["seq"])  # [B, L, d]
    has = batch["next"] > 0
    return h[has], batch["next"][has] - 1


def _expand(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry j repeated counts[j] times: (j of each copy, the copy's index 0..counts[j] - 1)."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    return owner, torch.arange(len(owner), device=counts.device) - (torch.cumsum(counts, 0) - counts)[owner]


def seen_pairs(batch, target: torch.Tensor, among: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(position, item) for every item the user had before each position's target (`exclude_seen`),
    positions as `_positions` orders them (sorted); the target itself never counts (a repeat is still the
    answer). Sparse: about positions x the users' distinct items, whatever the catalogue."""
    has = batch["next"] > 0
    w_of_p, col_of_p = has.nonzero(as_tuple=True)  # row-major: a window's positions are contiguous
    place = batch["place"][w_of_p, col_of_p]  # [P], increasing along each window
    count = torch.bincount(w_of_p, minlength=has.shape[0])  # positions per window
    end = torch.cumsum(count, 0)
    sw, si, sf = batch["seen_window"], batch["seen_item"], batch["seen_first"]
    if among is not None:  # only these items matter (shared negatives): drop the others before the expansion
        kept = torch.isin(si, among)
        sw, si, sf = sw[kept], si[kept], sf[kept]
    # the positions a (window, item) pair meets are a suffix of its window's: those whose target comes after
    # the item's first place
    wide = int(place.max()) + 2 if len(place) else 1
    first = torch.searchsorted(w_of_p * wide + place, sw * wide + sf, right=True)
    pair, offset = _expand((end[sw] - first).clamp(min=0))
    p = first[pair] + offset
    item = si[pair]
    keep = item != target[p]
    p, item = p[keep], item[keep]
    order = torch.argsort(p, stable=True)
    return p[order], item[order]


def _columns(p: torch.Tensor, item: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each pair (position p, item), every column j with items[j] == item (repeats allowed): the pairs
    (position, column), sorted by position."""
    ranked, order = torch.sort(items)
    lo = torch.searchsorted(ranked, item)
    pair, k = _expand(torch.searchsorted(ranked, item, right=True) - lo)  # each column holding a pair's item
    rows, cols = p[pair], order[lo[pair] + k]
    by = torch.argsort(rows, stable=True)
    return rows[by], cols[by]


def seen_before(batch, target: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """[P, N] which of the item codes `items` [N] (repeats allowed) each position's user had before its
    target (`seen_pairs`)."""
    rows, cols = _columns(*seen_pairs(batch, target, items), items)
    mask = torch.zeros(len(target), len(items), dtype=torch.bool, device=target.device)
    mask[rows, cols] = True
    return mask


def _low(device) -> torch.dtype | None:
    """bfloat16 where precision=bf16-mixed asked for it (the fused products choose their own precision)."""
    return torch.bfloat16 if torch.is_autocast_enabled(device.type) and \
        torch.get_autocast_dtype(device.type) == torch.bfloat16 else None


def _wide(x: torch.Tensor | None) -> torch.Tensor | None:
    """float32 for half-precision inputs (the softmax and its sums stay float32), any other kept."""
    return x.float() if x is not None and x.dtype in (torch.bfloat16, torch.float16) else x


def sequence_softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy of the next item over the whole catalogue, at every position (only the real ones,
    never the padding); with `exclude_seen` the items the user had before each target are left out of it
    (they are never ranked for the user)."""
    h, target = _positions(model, batch)
    if "seen_item" in batch:
        rows, items = seen_pairs(batch, target)
    else:
        rows = items = torch.zeros(0, dtype=torch.long, device=h.device)
    low = _low(h.device)
    with torch.autocast(h.device.type, enabled=False):
        table = _wide(model.catalogue())
        want = torch.is_grad_enabled() and (h.requires_grad or table.requires_grad)  # not for a validation loss
        return fused.cross_entropy(_wide(h), table, target, rows, items, low, want)


def _sampled(h, pos, target, neg, table, offset, log_q, seen=None, bias=None) -> torch.Tensor:
    """The fused cross-entropy of each position's own target logit h . pos against shared negatives `neg`
    [N] (rows of `table`, at codes + `offset`), each logit minus the log of its item's sampling probability
    (the log-Q correction: Yi et al., RecSys 2019), so the sampled softmax estimates the full one. A
    negative drawn k times is one column plus log k (the same softmax, its logits made once); a negative
    that is the position's own target is left out, and so is each (position, item) pair in `seen` (sorted
    by position). `bias`: a table of item biases, part of every logit (mf)."""
    neg, drawn = torch.unique(neg, return_counts=True)
    p, item = torch.arange(len(target), device=h.device), target
    if seen is not None:
        p, item = torch.cat([seen[0], p]), torch.cat([seen[1], item])
    rows, cols = _columns(p, item, neg)
    log_q = log_q.to(h.device)
    neg_bias = drawn.log().to(log_q.dtype) - log_q[neg]
    pos_bias = -log_q[target]
    if bias is not None:
        neg_bias = neg_bias + rows_of(bias, neg).squeeze(-1)
        pos_bias = pos_bias + rows_of(bias, target).squeeze(-1)
    neg_table = rows_of(table, neg + offset)
    low = _low(h.device)
    with torch.autocast(h.device.type, enabled=False):
        want = torch.is_grad_enabled() and any(x.requires_grad for x in (h, pos, neg_table, neg_bias, pos_bias))
        return fused.cross_entropy(_wide(h), _wide(neg_table), target, rows, cols, low, want,
                                   _wide(neg_bias), _wide(pos), _wide(pos_bias))


def sequence_sampled_softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy of the next item against negatives shared by the batch, drawn by popularity, log-Q
    corrected (`_sampled`); with `exclude_seen` a negative the user had before the target is left out."""
    h, target = _positions(model, batch)
    neg = batch["negatives"]  # [N] item codes
    seen = seen_pairs(batch, target, neg) if "seen_item" in batch else None
    return _sampled(h, rows_of(model.item, target + 1), target, neg, model.item, 1, batch["log_q"], seen)


def sequence_bce(model, batch, squash) -> torch.Tensor:
    """SASRec's original loss: the next item (1) against one uniformly drawn item (0) at every position;
    with `exclude_seen` a drawn item the user had before that position is no negative (left out)."""
    h = model.encode(batch["seq"])
    has = batch["next"] > 0
    pos = (h * rows_of(model.item, batch["next"])).sum(-1)[has]
    negative = has
    if "seen_item" in batch:  # the drawn item among what the user had before that position's target
        p, item = seen_pairs(batch, batch["next"][has] - 1)
        drawn = batch["neg_next"][has] - 1  # [P]
        width = int(max(drawn.max(), item.max() if len(item) else 0)) + 1
        had = torch.isin(torch.arange(len(drawn), device=drawn.device) * width + drawn, p * width + item)
        negative = has.clone()
        negative[has] = ~had
    neg = (h * rows_of(model.item, batch["neg_next"])).sum(-1)[negative]
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


