"""Factorisation machine over id and side-feature fields.

Rendle, "Factorization Machines", ICDM 2010. Second-order term via the O(F*d) identity
0.5 * ((sum_f v_f)^2 - sum_f v_f^2).
"""

import torch
from torch import nn

from recsys.models._fields import FieldEmbedding, first_order
from recsys.models.base import Model


class FM(Model):
    scores_blocks = True
    block_pairs = 1 << 23  # a ranked pair costs one product: big blocks, so the item side is built less often
    uses_features = True

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 16, include_bias: bool = True, **features):
        super().__init__()
        self.fields = FieldEmbedding(n_users, n_items, embedding_dim, **features)
        self.linear = first_order(FieldEmbedding(n_users, n_items, 1, **features)) if include_bias else None
        self.offset = nn.Parameter(torch.zeros(1))

    def set_tables(self, *tables):
        for f in (self.fields, self.linear):
            if f is not None:
                f.set_tables(*tables)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        v = self.fields(user, item)  # [B, F, d]
        pair = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(-1)  # [B]
        out = pair + self.offset
        if self.linear is not None:
            out = out + self.linear(user, item).sum((1, 2))
        return out

    @torch.no_grad()
    def score_block(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """[b] users x every item in closed form: with s the sum of a side's field vectors and q the sum of
        their squares, the pair term is 0.5 * (|s_u|^2 + |s_i|^2 + 2 s_u.s_i - q_u - q_i): one matmul."""
        items = torch.arange(n_items, device=users.device)
        u, i = self.fields.user_side(users), self.fields.item_side(items)
        su, si = u.sum(1), i.sum(1)
        side_u = 0.5 * (su.pow(2).sum(-1) - u.pow(2).sum((1, 2)))
        side_i = 0.5 * (si.pow(2).sum(-1) - i.pow(2).sum((1, 2))) + self.offset
        if self.linear is not None:
            side_u = side_u + self.linear.user_side(users).sum((1, 2))
            side_i = side_i + self.linear.item_side(items).sum((1, 2))
        one_u, one_i = torch.ones_like(side_u)[:, None], torch.ones_like(side_i)[:, None]
        # the per-side terms ride in the product ([s_u, side_u, 1] . [s_i, 1, side_i]): one pass over the output
        return torch.cat([su, side_u[:, None], one_u], 1) @ torch.cat([si, one_i, side_i[:, None]], 1).T
