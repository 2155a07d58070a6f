"""Global mean: one learned constant (the sanity baseline every model must beat clearly)."""

import torch
from torch import nn


class GlobalMean(nn.Module):
    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(user.shape[0])  # [B]

    def score_matrix(self, user: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(user.shape[0], 1)  # broadcasts against all items
