"""DCN-V2: full-rank crosses x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, in parallel with an MLP.

Wang et al., "DCN V2: Improved Deep & Cross Network", WWW 2021.
"""

import torch
from torch import nn

from recsys.models._fields import CrossAndDeep, by_pair_chunks, pair_sum, tower


class DCNv2(CrossAndDeep):
    scores_blocks = True

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 16, cross_layers: int = 3,
                 deep_layers: list[int] = (256, 128), dropout: float = 0.2, **features):
        super().__init__(n_users, n_items, embedding_dim, cross_layers, deep_layers, dropout, **features)

    def build_crosses(self, width: int, n: int) -> None:
        self.cross = nn.ModuleList([nn.Linear(width, width) for _ in range(n)])
        for c in self.cross:
            nn.init.zeros_(c.weight)  # start as identity-plus-zero: training grows the crosses
            nn.init.zeros_(c.bias)

    def crosses(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x  # full-rank cross: [B, W]
        return x

    @torch.no_grad()
    def score_block(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """[b] users x every item: fields, the first cross and the deep tower's first layer per side."""
        items = torch.arange(n_items, device=users.device)
        u, i = self.fields.user_side(users), self.fields.item_side(items)
        hu, hi = self.fields.split_linear(self.deep[0], u, i)
        cu, ci = self.fields.split_linear(self.cross[0], u, i) if len(self.cross) else (None, None)

        def chunk(us, its):
            x0 = self.fields.pairs(u[us], i[its]).flatten(1)
            x = x0
            for j, layer in enumerate(self.cross):
                x = x0 * (pair_sum(cu[us], ci[its]) if j == 0 else layer(x)) + x
            return self.out(torch.cat([x, tower(self.deep[1:], hu[us], hi[its])], -1)).squeeze(-1)
        return by_pair_chunks(len(users), n_items, chunk, hu)
