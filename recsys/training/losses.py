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


def _expand(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry j repeated counts[j] times: (j of each copy, the copy's index 0..counts[j] - 1)."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    return owner, torch.arange(len(owner), device=counts.device) - (torch.cumsum(counts, 0) - counts)[owner]


def seen_pairs(batch, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(position, item) for every item the user had before each position's target (`exclude_seen`),
    positions as `_positions` orders them (sorted); the target itself never counts (a repeat is still the
    answer). Sparse: about positions x the users' distinct items, whatever the catalogue."""
    has = batch["next"] > 0
    w_of_p, col_of_p = has.nonzero(as_tuple=True)  # row-major: a window's positions are contiguous
    place = batch["place"][w_of_p, col_of_p]  # [P]
    count = torch.bincount(w_of_p, minlength=has.shape[0])  # positions per window
    start = torch.cumsum(count, 0) - count
    sw, si, sf = batch["seen_window"], batch["seen_item"], batch["seen_first"]
    pair, offset = _expand(count[sw])  # each (window, item) pair meets every position of its window
    p = start[sw[pair]] + offset
    item = si[pair]
    keep = (sf[pair] < place[p]) & (item != target[p])
    p, item = p[keep], item[keep]
    order = torch.argsort(p, stable=True)
    return p[order], item[order]


def seen_before(batch, target: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """[P, N] which of the item codes `items` [N] (repeats allowed) each position's user had before its
    target (`seen_pairs`)."""
    p, item = seen_pairs(batch, target)
    ranked, order = torch.sort(items)
    lo = torch.searchsorted(ranked, item)
    pair, k = _expand(torch.searchsorted(ranked, item, right=True) - lo)  # each column holding a pair's item
    mask = torch.zeros(len(target), len(items), dtype=torch.bool, device=target.device)
    mask[p[pair], order[lo[pair] + k]] = True
    return mask


LOGIT_CHUNK = 1 << 22  # logits held at once by the full softmax (16 MiB of float32): positions x the catalogue


class CatalogueCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `target` [P] over the whole catalogue, logits h [P, d] @ table [n, d].T, with
    (position, item) pairs (sorted by position) left out of the softmax. The [P, n] logits are never held
    whole, and made only once: a chunk of positions at a time, the forward pass takes their log-softmax at
    the target and, where a gradient is wanted, turns them in place into d loss / d logits (softmax minus
    the target's one) and multiplies that into both gradients at once; backward only scales them. Cost:
    three [chunk, d] x [d, n]-sized products and one fused pass over the logits (Liger-Kernel's fused
    linear cross-entropy does the same on GPUs); memory: a chunk of logits and the two gradients.
    The logits are made as table @ h.T ([n, chunk]: on CPU twice the rate of h @ table.T, whose inner
    dimension is only d) and kept in that layout: the softmax of a column is a max, an exp, a sum and a
    division, each over rows (a transpose to softmax along memory cost as much as the product). `low` (bfloat16) runs
    the products with bfloat16 inputs, as autocast does on a GPU: 3-4x the float32 rate on CPUs with
    bfloat16 units; the softmax and the gradients' sums stay float32."""

    @staticmethod
    def forward(ctx, h, table, target, rows, items, low=None, want_grad=True):
        n_pos = len(h)
        chunk = max(1, LOGIT_CHUNK // max(table.shape[0], 1))
        bounds = torch.searchsorted(rows, torch.arange(n_pos + 1, device=rows.device)).tolist()
        dtype = low or h.dtype
        hl, tl = h.to(dtype), table.to(dtype)
        picked = torch.empty(n_pos, dtype=h.dtype, device=h.device)
        gh = torch.empty_like(h) if want_grad else None
        gt = torch.zeros_like(table) if want_grad else None
        cols = torch.arange(chunk, device=h.device)
        for s in range(0, n_pos, chunk):
            e = min(n_pos, s + chunk)
            z = tl @ hl[s:e].T  # [n, c]: a chunk's logits, one column a position
            z = z.float() if z.dtype == torch.bfloat16 else z
            lo, hi = bounds[s], bounds[e]
            if hi > lo:
                z[items[lo:hi], rows[lo:hi] - s] = float("-inf")
            at, tgt = cols[:e - s], target[s:e]
            top = z.amax(0)
            picked[s:e] = (z[tgt, at] - top).to(h.dtype)
            total = z.sub_(top).exp_().sum(0)  # the softmax's numerators in place, and their sums
            picked[s:e] -= total.log().to(h.dtype)
            if want_grad:
                z.div_(total)  # the softmax
                z[tgt, at] -= 1.0
                g = z.to(dtype)  # d (the chunk's summed loss) / d logits, [n, c]
                gh[s:e] = (g.T @ tl).to(h.dtype)
                gt += (g @ hl[s:e]).to(table.dtype)
        ctx.save_for_backward(gh, gt)
        ctx.n_pos = n_pos
        return -picked.mean()

    @staticmethod
    def backward(ctx, grad):
        gh, gt = ctx.saved_tensors
        if gh is None:
            raise RuntimeError("the catalogue softmax was computed without its gradient (want_grad=False)")
        scale = grad / ctx.n_pos
        return gh * scale, gt * scale, None, None, None, None, None


def sequence_softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy of the next item over the whole catalogue, at every position (only the real ones,
    never the padding); with `exclude_seen` the items the user had before each target are left out of it
    (they are never ranked for the user)."""
    h, target = _positions(model, batch)
    if "seen_item" in batch:
        rows, items = seen_pairs(batch, target)
    else:
        rows = items = torch.zeros(0, dtype=torch.long, device=h.device)
    low = torch.bfloat16 if torch.is_autocast_enabled(h.device.type) and \
        torch.get_autocast_dtype(h.device.type) == torch.bfloat16 else None  # precision=bf16-mixed
    with torch.autocast(h.device.type, enabled=False):  # its products choose their own precision
        table = model.catalogue().float()
        want = torch.is_grad_enabled() and (h.requires_grad or table.requires_grad)  # not for a validation loss
        return CatalogueCrossEntropy.apply(h.float(), table, target, rows, items, low, want)


def sequence_sampled_softmax(model, batch, squash) -> torch.Tensor:
    """Cross-entropy of the next item against negatives shared by the batch, drawn by popularity, with
    the log-Q correction (each logit minus the log of its item's sampling probability: Yi et al.,
    RecSys 2019), so the sampled softmax estimates the full one; a negative that is the target is masked."""
    h, target = _positions(model, batch)
    neg = batch["negatives"]  # [N] item codes
    pos = (h * rows(model.item, target + 1)).sum(-1)  # [P] (row 0 of the table is padding)
    negs = h @ rows(model.item, neg + 1).T  # [P, N]
    leave_out = seen_before(batch, target, neg) if "seen_item" in batch else None  # exclude_seen
    return _shared_softmax(pos, negs, neg, target, batch["log_q"].to(h.device), leave_out)


def sequence_bce(model, batch, squash) -> torch.Tensor:
    """SASRec's original loss: the next item (1) against one uniformly drawn item (0) at every position;
    with `exclude_seen` a drawn item the user had before that position is no negative (left out)."""
    h = model.encode(batch["seq"])
    has = batch["next"] > 0
    pos = (h * rows(model.item, batch["next"])).sum(-1)[has]
    negative = has
    if "seen_item" in batch:  # the drawn item among what the user had before that position's target
        p, item = seen_pairs(batch, batch["next"][has] - 1)
        drawn = batch["neg_next"][has] - 1  # [P]
        width = int(max(drawn.max(), item.max() if len(item) else 0)) + 1
        had = torch.isin(torch.arange(len(drawn), device=drawn.device) * width + drawn, p * width + item)
        negative = has.clone()
        negative[has] = ~had
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


