"""Popularity: scores an item by how often it occurs in training (the implicit baseline).

For the rating task it predicts the item's mean training rating, shrunk towards the global mean by
`damping` pseudo-ratings (recsys.baselines, as the served model's fallback). Closed form: `fit` sets
its buffer from the training data.
"""

import numpy as np
import torch

from recsys import baselines
from recsys.models.base import Model


class Popularity(Model):
    scores_catalogue = True
    closed_form = True

    def __init__(self, n_users: int, n_items: int, damping: float = baselines.DAMPING):
        super().__init__()
        self.damping = damping
        self.register_buffer("item_score", torch.zeros(n_items))

    def fit(self, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor, task: str, to_logit) -> None:
        n = self.item_score.numel()
        if task == "implicit":
            score = torch.from_numpy(np.log1p(baselines.item_counts(item.numpy(), n)))
        else:
            score = to_logit(torch.from_numpy(baselines.damped_item_means(item.numpy(), rating.numpy(), n, self.damping)))
        self.item_score.copy_(score.float())

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.item_score[item]

    def score_matrix(self, user: torch.Tensor) -> torch.Tensor:
        return self.item_score.expand(user.shape[0], -1)
