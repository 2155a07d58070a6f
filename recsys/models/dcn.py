"""Deep & Cross Network: explicit feature crosses x_{l+1} = x_0 (x_l . w_l) + b_l + x_l beside an MLP.

Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017.
"""

import torch
from torch import nn

from recsys.models._fields import CrossAndDeep, by_pair_chunks, tower


class DCN(CrossAndDeep):
    scores_blocks = True
    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 16, cross_layers: int = 3,
                 deep_layers: list[int] = (256, 128), dropout: float = 0.2, **features):
        super().__init__(n_users, n_items, embedding_dim, cross_layers, deep_layers, dropout, **features)

    def build_crosses(self, width: int, n: int) -> None:
        self.cross_w = nn.ParameterList([nn.Parameter(torch.randn(width) * 0.01) for _ in range(n)])
        self.cross_b = nn.ParameterList([nn.Parameter(torch.zeros(width)) for _ in range(n)])

    def crosses(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.cross_w, self.cross_b):
            x = x0 * (x @ w).unsqueeze(-1) + b + x  # rank-one cross: [B, W]
        return x

    @torch.no_grad()
    def score_block(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """[b] users x every item. A rank-one cross keeps x_l = x0 * a_l + c_l with a scalar a_l per pair
        and a constant vector c_l: a_{l+1} = a_l (x0.w_l + 1) + c_l.w_l, c_{l+1} = c_l + b_l. Every x0.v
        is a user part plus an item part, so the whole cross network, and its share of the output
        layer, costs a few [b, n_items] sums; only the deep tower (its first layer split per side) runs
        per pair."""
        items = torch.arange(n_items, device=users.device)
        fields = self.fields
        u, i = fields.user_side(users), fields.item_side(items)
        hu, hi = fields.split_linear(self.deep[0], u, i)
        w_out = self.out.weight[0]
        vectors = torch.stack([*self.cross_w, w_out[:self.width]])  # [L + 1, W]: what x0 is dotted with
        v = vectors.view(len(vectors), fields.num_fields, -1)
        pu = u.flatten(1) @ v[:, fields.user_pos].flatten(1).T  # [b, L + 1]
        pi = i.flatten(1) @ v[:, fields.item_pos].flatten(1).T  # [n_items, L + 1]
        a, c = torch.ones(len(users), n_items, dtype=hu.dtype, device=hu.device), torch.zeros_like(w_out[:self.width])
        for layer, (w, b) in enumerate(zip(self.cross_w, self.cross_b)):
            a = a * (pu[:, layer, None] + pi[None, :, layer] + 1) + c @ w
            c = c + b
        base = a * (pu[:, -1, None] + pi[None, :, -1]) + c @ w_out[:self.width] + self.out.bias
        w_deep = w_out[self.width:]

        def chunk(us, its):
            return (tower(self.deep[1:], hu[us], hi[its]) @ w_deep).view(-1, hi[its].shape[0]) + base[us, its]
        return by_pair_chunks(len(users), n_items, chunk, hu)
