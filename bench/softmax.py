"""The fused next-item softmax (recsys/training/fused.py) against plain PyTorch, forward and backward, in
the same run, one thread:

    python bench/softmax.py [--positions 4840] [--items 25000] [--negatives 2048] [--width 64] [--repeats 5]

- sampled: each position's target against `--negatives` shared negatives drawn by popularity (Zipf-like:
  popular items are drawn several times), log-Q corrected, the target's own column left out, through
  `losses.sequence_sampled_softmax`'s fused pass, against the plain [positions, 1 + negatives] logits,
  masked_fill and F.cross_entropy (what the project ran before);
- full: the whole catalogue through the fused pass against F.cross_entropy over [positions, items].
Prints seconds per step of each, their ratio, and the largest difference in the loss and the gradients.
The defaults are a training step of the fifth of ML-25M (128 windows, 4,840 positions).
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recsys.training import fused, losses  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--positions", type=int, default=4840)
p.add_argument("--items", type=int, default=25_000)
p.add_argument("--negatives", type=int, default=2048)
p.add_argument("--width", type=int, default=64)
p.add_argument("--repeats", type=int, default=5)
a = p.parse_args()
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
table = torch.nn.Embedding(a.items + 1, a.width)
h0 = torch.randn(a.positions, a.width, generator=g)
q = 1.0 / torch.arange(1, a.items + 1, dtype=torch.float64)  # Zipf-like popularity
q /= q.sum()
log_q = q.log().float()
target = torch.multinomial(q, a.positions, replacement=True, generator=g)
neg = torch.multinomial(q, a.negatives, replacement=True, generator=g)
none = torch.zeros(0, dtype=torch.long)


def plain_sampled(h):
    pos = (h * table(target + 1)).sum(-1) - log_q[target]
    negs = (h @ table(neg + 1).T - log_q[neg][None, :]).masked_fill(neg[None, :] == target[:, None], float("-inf"))
    return F.cross_entropy(torch.cat([pos[:, None], negs], 1), torch.zeros(len(h), dtype=torch.long))


def fused_sampled(h):
    return losses._sampled(h, table(target + 1), target, neg, table, 1, log_q)


def plain_full(h):
    return F.cross_entropy(h @ table.weight[1:].T, target)


def fused_full(h):
    return fused.cross_entropy(h, table.weight[1:], target, none, none)


def timed(f):
    """Seconds a step (forward and backward), the loss and the gradients of the last one."""
    out = None
    for i in range(a.repeats + 1):
        if i == 1:
            t = time.perf_counter()
        table.zero_grad()
        h = h0.clone().requires_grad_()
        loss = f(h)
        loss.backward()
        out = (loss.item(), h.grad, table.weight.grad.clone())
    return (time.perf_counter() - t) / a.repeats, out


for name, plain, mine in (("sampled", plain_sampled, fused_sampled), ("full", plain_full, fused_full)):
    tp, (lp, hp, tpg) = timed(plain)
    tf, (lf, hf, tfg) = timed(mine)
    cols = f"{a.negatives:,} shared negatives ({neg.unique().numel():,} distinct)" if name == "sampled" else \
        f"{a.items:,} items"
    print(f"{name}: {a.positions:,} positions x {cols} x {a.width}: plain {tp:.3f}s, fused {tf:.3f}s a step = "
          f"{tp / tf:.2f}x; |loss difference| {abs(lp - lf):.1e}, gradients within "
          f"{max((hp - hf).abs().max().item(), (tpg - tfg).abs().max().item()):.1e}", flush=True)
