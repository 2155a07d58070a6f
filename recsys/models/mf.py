"""Biased matrix factorisation: <p_u, q_i> + b_u + b_i + mu.

Koren, Bell & Volinsky, "Matrix Factorization Techniques for Recommender Systems", IEEE Computer 2009.
"""

import torch
from torch import nn

from recsys.models._fields import first_order
from recsys.models.base import Model


class MF(Model):
    scores_catalogue = True

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 64, init_std: float = 0.01):
        super().__init__()
        self.user = nn.Embedding(n_users, embedding_dim)
        self.item = nn.Embedding(n_items, embedding_dim)
        self.user_bias = first_order(nn.Embedding(n_users, 1))
        self.item_bias = first_order(nn.Embedding(n_items, 1))
        self.offset = nn.Parameter(torch.zeros(1))
        for e in (self.user, self.item):
            nn.init.normal_(e.weight, std=init_std)
        for e in (self.user_bias, self.item_bias):
            nn.init.zeros_(e.weight)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        dot = (self.user(user) * self.item(item)).sum(-1)  # [B]
        return dot + self.user_bias(user).squeeze(-1) + self.item_bias(item).squeeze(-1) + self.offset

    def score_matrix(self, user: torch.Tensor) -> torch.Tensor:
        """[b] users -> [b, n_items]: one matrix product instead of b * n_items pairs."""
        return (self.user(user) @ self.item.weight.T + self.user_bias(user)
                + self.item_bias.weight.T + self.offset)
