"""Adam and AdamW whose embedding tables are updated row by row: the cost of a step follows the batch,
not the size of the tables.

An `nn.Embedding(sparse=True)` lookup gives its table a sparse gradient that holds only the rows the
batch read. For such a gradient `step()` updates only those rows: their moments, the bias-corrected
step and the weight decay (L2 into the gradient for adam, decoupled for adamw), as TensorFlow
Addons' LazyAdam and torch's SparseAdam do (SparseAdam has no weight decay, and needs a second
optimizer for the dense weights). Rows the batch did not read keep their weights and moments: with
dense Adam they would still drift on their old momentum and decay every step. Every other parameter
(dense gradient) takes torch's own (fused) Adam/AdamW step, so one optimizer, one scheduler and one
checkpoint hold both.

Measured on ML-25M-shaped tables (221k rows of 120 floats, batch 8,192, 2 CPU threads;
`python bench/scale.py --only bare`): dense Adam touches 26.5M floats a step, this 2.0M.
"""

from __future__ import annotations

import torch
from torch import nn


def use_row_updates(model: nn.Module) -> int:
    """Switch every embedding table of `model` to sparse gradients; -> the rows they hold."""
    rows = 0
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            m.sparse = True
            rows += m.num_embeddings
    return rows


def table_rows(model: nn.Module) -> int:
    return sum(m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding))


class _Rows:
    """The row-wise step, shared by RowAdam and RowAdamW (decoupled decides how decay applies)."""

    decoupled = False

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None or not p.grad.is_sparse:
                    continue
                grad = p.grad.coalesce()  # duplicates summed: one value per row read
                p.grad = None  # the dense step below skips it
                rows, g = grad.indices()[0], grad.values()
                if not len(rows):
                    continue
                state = self.state[p]  # Adam's own keys, so that Adam's load_state_dict reads them back
                if "step" not in state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                w = p.index_select(0, rows)  # [r, d]
                if wd and self.decoupled:
                    w.mul_(1 - lr * wd)
                elif wd:
                    g = g.add(w, alpha=wd)
                m = state["exp_avg"].index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                denom = v.div_(1 - b2 ** t).sqrt_().add_(eps)
                w.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))
                p.index_copy_(0, rows, w)
        return super().step(closure)


class RowAdam(_Rows, torch.optim.Adam):
    pass


class RowAdamW(_Rows, torch.optim.AdamW):
    decoupled = True
