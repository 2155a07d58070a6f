"""AutoInt: multi-head self-attention over field embeddings, with residual connections.

Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks",
CIKM 2019.
"""

import torch
from torch import nn

from recsys.models._fields import FieldEmbedding


class AutoInt(nn.Module):
    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 32, num_heads: int = 4, num_layers: int = 2,
                 dropout: float = 0.1, **features):
        super().__init__()
        self.fields = FieldEmbedding(n_users, n_items, embedding_dim, **features)
        self.attn = nn.ModuleList([nn.MultiheadAttention(embedding_dim, num_heads, dropout=dropout, batch_first=True)
                                   for _ in range(num_layers)])
        self.out = nn.Linear(self.fields.num_fields * embedding_dim, 1)

    def set_tables(self, *tables):
        self.fields.set_tables(*tables)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        x = self.fields(user, item)  # [B, F, d]
        for attn in self.attn:
            x = torch.relu(attn(x, x, x, need_weights=False)[0] + x)
        return self.out(x.flatten(1)).squeeze(-1)
