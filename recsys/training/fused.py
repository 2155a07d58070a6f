"""The cross-entropy of a next item over many candidates, its logits made once and never held whole: the
whole catalogue (the full softmax) or negatives shared by a batch (the sampled one), one implementation.

A chunk of positions at a time, the forward pass makes the chunk's logits, takes their log-softmax at the
target and, where a gradient is wanted, turns them in place into d loss / d logits (softmax minus the
target's one) and multiplies that into every gradient at once; backward only scales them. Cost: three
[chunk, d] x [d, n]-sized products and one fused pass over the logits (Liger-Kernel's fused linear
cross-entropy does the same on GPUs); memory: a chunk of logits and the gradients. The logits are made
as table @ h.T ([n, chunk]: on CPU twice the rate of h @ table.T, whose inner dimension is only d) and
kept in that layout: the softmax of a column is a max, an exp, a sum and a division, each over rows (a
transpose to softmax along memory cost as much as the product). `low` (bfloat16) runs the products with
bfloat16 inputs, as autocast does on a GPU; the softmax and the gradients' sums stay float32."""

from __future__ import annotations

import torch

LOGIT_CHUNK = 1 << 22  # logits held at once: positions x candidates (16 MiB of float32)


class FusedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over logits h [P, d] @ table [n, d].T (+ `bias` [n]), with (position, column)
    pairs (`rows` sorted, `cols`) left out of the softmax.

    The target of position p is the table's row target[p] (the catalogue), or, where `pos` [P, d] is
    given, a logit of its own, h[p] . pos[p] + pos_bias[p], beside the table's (shared negatives).
    Gradients reach h, table, bias, pos and pos_bias."""

    @staticmethod
    def forward(ctx, h, table, target, rows, cols, low=None, want_grad=True, bias=None, pos=None, pos_bias=None):
        n_pos = len(h)
        chunk = max(1, LOGIT_CHUNK // max(table.shape[0], 1))
        bounds = torch.searchsorted(rows, torch.arange(n_pos + 1, device=rows.device)).tolist()
        dtype = low or h.dtype
        hl, tl = h.to(dtype), table.to(dtype)
        picked = torch.empty(n_pos, dtype=h.dtype, device=h.device)
        gh = torch.empty_like(h) if want_grad else None
        gt = torch.zeros_like(table) if want_grad else None
        gb = torch.zeros(len(table), dtype=h.dtype, device=h.device) if want_grad and bias is not None else None
        gpos = torch.empty(n_pos, dtype=h.dtype, device=h.device) if want_grad and pos is not None else None
        at = torch.arange(chunk, device=h.device)
        for s in range(0, n_pos, chunk):
            e = min(n_pos, s + chunk)
            z = tl @ hl[s:e].T  # [n, c]: a chunk's logits, one column a position
            z = z.float() if z.dtype == torch.bfloat16 else z
            if bias is not None:
                z += bias.to(z.dtype)[:, None]
            lo, hi = bounds[s], bounds[e]
            if hi > lo:
                z[cols[lo:hi], rows[lo:hi] - s] = float("-inf")
            if pos is None:
                p = z[target[s:e], at[:e - s]]
                top = z.amax(0)
            else:
                p = (h[s:e] * pos[s:e]).sum(-1).to(z.dtype) + (0 if pos_bias is None else pos_bias[s:e].to(z.dtype))
                top = torch.maximum(z.amax(0), p)
            own = (p - top).exp() if pos is not None else 0  # the target's own numerator, beside the table's
            total = z.sub_(top).exp_().sum(0) + own  # the softmax's numerators in place, and their sums
            picked[s:e] = (p - top - total.log()).to(h.dtype)
            if want_grad:
                z.div_(total)  # the softmax over the table's columns
                if pos is None:
                    z[target[s:e], at[:e - s]] -= 1.0
                else:
                    gpos[s:e] = (own / total - 1.0).to(h.dtype)  # d loss / d the target's own logit
                g = z.to(dtype)  # d (the chunk's summed loss) / d logits, [n, c]
                gh[s:e] = (g.T @ tl).to(h.dtype)
                gt += (g @ hl[s:e]).to(table.dtype)
                if gb is not None:
                    gb += z.sum(1).to(h.dtype)
        if want_grad and pos is not None:
            gh += gpos[:, None] * pos
        ctx.save_for_backward(gh, gt, gb, gpos, h if pos is not None else None)
        ctx.n_pos = n_pos
        return -picked.mean()

    @staticmethod
    def backward(ctx, grad):
        gh, gt, gb, gpos, h = ctx.saved_tensors
        if gh is None:
            raise RuntimeError("the fused softmax was computed without its gradient (want_grad=False)")
        scale = grad / ctx.n_pos
        g_pos = gpos[:, None] * h * scale if gpos is not None else None
        g_pos_bias = gpos * scale if gpos is not None else None
        return (gh * scale, gt * scale, None, None, None, None, None,
                gb * scale if gb is not None else None, g_pos, g_pos_bias)


def cross_entropy(h, table, target, rows, cols, low=None, want_grad=True, bias=None, pos=None, pos_bias=None):
    """FusedCrossEntropy.apply with keywords."""
    return FusedCrossEntropy.apply(h, table, target, rows, cols, low, want_grad, bias, pos, pos_bias)
