"""Deep & Cross Network: explicit feature crosses x_{l+1} = x_0 (x_l . w_l) + b_l + x_l beside an MLP.

Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017.
"""

import torch
from torch import nn

from recsys.models._fields import FieldEmbedding, mlp
from recsys.models.base import Model


class DCN(Model):
    uses_features = True

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 16, cross_layers: int = 3,
                 deep_layers: list[int] = (256, 128), dropout: float = 0.2, **features):
        super().__init__()
        self.fields = FieldEmbedding(n_users, n_items, embedding_dim, **features)
        width = self.fields.num_fields * embedding_dim
        self.cross_w = nn.ParameterList([nn.Parameter(torch.randn(width) * 0.01) for _ in range(cross_layers)])
        self.cross_b = nn.ParameterList([nn.Parameter(torch.zeros(width)) for _ in range(cross_layers)])
        self.deep = mlp([width, *deep_layers], dropout)
        self.out = nn.Linear(width + deep_layers[-1], 1)

    def set_tables(self, *tables):
        self.fields.set_tables(*tables)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        x0 = self.fields(user, item).flatten(1)  # [B, W]
        x = x0
        for w, b in zip(self.cross_w, self.cross_b):
            x = x0 * (x @ w).unsqueeze(-1) + b + x  # rank-one cross: [B, W]
        return self.out(torch.cat([x, self.deep(x0)], -1)).squeeze(-1)
