"""Deep & Cross Network: explicit feature crosses x_{l+1} = x_0 (x_l . w_l) + b_l + x_l beside an MLP.

Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017.
"""

import torch
from torch import nn

from recsys.models._fields import CrossAndDeep


class DCN(CrossAndDeep):
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
