"""Popularity: scores an item by how often it occurs in training (the implicit baseline).

For the rating task it predicts the item's mean training rating, shrunk towards the global mean by
`damping` pseudo-ratings. It has no trainable parameters: `fit` sets its buffer from the training data.
"""

import torch
from torch import nn


class Popularity(nn.Module):
    def __init__(self, n_users: int, n_items: int, damping: float = 5.0):
        super().__init__()
        self.damping = damping
        self.register_buffer("item_score", torch.zeros(n_items))

    def fit(self, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor, task: str, to_logit) -> None:
        n = torch.bincount(item, minlength=self.item_score.numel()).float()
        if task == "implicit":
            self.item_score.copy_(torch.log1p(n))
        else:
            total = torch.bincount(item, weights=rating.double(), minlength=n.numel()).float()
            mean = rating.float().mean()
            self.item_score.copy_(to_logit((total + self.damping * mean) / (n + self.damping)))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.item_score[item]

    def score_matrix(self, user: torch.Tensor) -> torch.Tensor:
        return self.item_score.expand(user.shape[0], -1)
