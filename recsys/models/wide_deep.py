"""Wide & Deep: a linear (wide) part over the fields plus an MLP (deep) over their embeddings.

Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016.
"""

import torch
from torch import nn

from recsys.models._fields import FieldEmbedding, by_pair_chunks, first_order, mlp, tower
from recsys.models.base import Model


class WideDeep(Model):
    scores_blocks = True
    uses_features = True

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 32, deep_layers: list[int] = (256, 128),
                 dropout: float = 0.2, **features):
        super().__init__()
        self.fields = FieldEmbedding(n_users, n_items, embedding_dim, **features)
        self.wide = first_order(FieldEmbedding(n_users, n_items, 1, **features))
        self.deep = mlp([self.fields.num_fields * embedding_dim, *deep_layers], dropout)
        self.out = nn.Linear(deep_layers[-1], 1)

    def set_tables(self, *tables):
        self.fields.set_tables(*tables)
        self.wide.set_tables(*tables)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        v = self.fields(user, item).flatten(1)  # [B, F*d]
        return self.out(self.deep(v)).squeeze(-1) + self.wide(user, item).sum((1, 2))

    @torch.no_grad()
    def score_block(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """[b] users x every item: fields and the deep tower's first layer per side, the rest per pair."""
        items = torch.arange(n_items, device=users.device)
        hu, hi = self.fields.split_linear(self.deep[0], self.fields.user_side(users), self.fields.item_side(items))
        wu, wi = self.wide.user_side(users).sum((1, 2)), self.wide.item_side(items).sum((1, 2))

        def chunk(us, its):
            h = tower(self.deep[1:], hu[us], hi[its])
            return self.out(h).view(-1, hi[its].shape[0]) + wu[us, None] + wi[None, its]
        return by_pair_chunks(len(users), n_items, chunk, hu)
