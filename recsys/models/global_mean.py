"""Global mean: the mean training rating, in closed form (the sanity baseline every model must beat)."""

import torch

from recsys.models.base import Model


class GlobalMean(Model):
    scores_catalogue = True
    closed_form = True

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.register_buffer("bias", torch.zeros(1))  # the raw score that squashes to the mean rating

    def fit(self, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor, task: str, to_logit) -> None:
        if task == "rating":
            self.bias.copy_(to_logit(rating.double().mean().float().reshape(1)))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(user.shape[0])  # [B]

    def score_matrix(self, user: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(user.shape[0], 1)  # [B, 1], broadcasts against all items
