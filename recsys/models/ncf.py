"""NeuMF: a GMF tower (element-wise product) and an MLP tower fused by a final linear layer.

He et al., "Neural Collaborative Filtering", WWW 2017.
"""

import torch
from torch import nn

from recsys.models._fields import by_pair_chunks, first_order, mlp, tower
from recsys.models.base import Model


class NCF(Model):
    scores_blocks = True

    def __init__(self, n_users: int, n_items: int, mf_dim: int = 8, mlp_dim: int = 32,
                 layers: list[int] = (64, 32, 16), dropout: float = 0.0, include_bias: bool = True):
        super().__init__()
        self.gmf_user, self.gmf_item = nn.Embedding(n_users, mf_dim), nn.Embedding(n_items, mf_dim)
        self.mlp_user, self.mlp_item = nn.Embedding(n_users, mlp_dim), nn.Embedding(n_items, mlp_dim)
        self.mlp = mlp([2 * mlp_dim, *layers], dropout)
        self.out = nn.Linear(mf_dim + layers[-1], 1, bias=include_bias)
        self.user_bias = first_order(nn.Embedding(n_users, 1)) if include_bias else None
        self.item_bias = first_order(nn.Embedding(n_items, 1)) if include_bias else None
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.01)
        for b in (self.user_bias, self.item_bias):
            if b is not None:
                nn.init.zeros_(b.weight)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        gmf = self.gmf_user(user) * self.gmf_item(item)  # [B, mf_dim]
        deep = self.mlp(torch.cat([self.mlp_user(user), self.mlp_item(item)], -1))  # [B, layers[-1]]
        out = self.out(torch.cat([gmf, deep], -1)).squeeze(-1)
        if self.user_bias is not None:
            out = out + self.user_bias(user).squeeze(-1) + self.item_bias(item).squeeze(-1)
        return out

    @torch.no_grad()
    def score_block(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """[b] users x every item: the MLP's first layer split into a user part and an item part (its
        input is the two embeddings side by side), computed per side; the GMF tower is linear in each
        side, so its share of the output layer is one [b, n_items] matrix product (with the biases);
        only the MLP's later layers run per pair."""
        items = torch.arange(n_items, device=users.device)
        first, d = self.mlp[0], self.mlp_user.embedding_dim
        hu = self.mlp_user(users) @ first.weight[:, :d].T
        hi = self.mlp_item(items) @ first.weight[:, d:].T + first.bias
        k, w = self.gmf_user.embedding_dim, self.out.weight[0]
        base = (self.gmf_user(users) * w[:k]) @ self.gmf_item(items).T  # [b, n_items]
        if self.out.bias is not None:
            base = base + self.out.bias
        if self.user_bias is not None:
            base = base + self.user_bias(users) + self.item_bias(items).T
        wd = w[k:]

        def chunk(us, its):
            return (tower(self.mlp[1:], hu[us], hi[its]) @ wd).view(-1, hi[its].shape[0]) + base[us, its]
        return by_pair_chunks(len(users), n_items, chunk, base)
