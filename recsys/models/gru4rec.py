"""GRU4Rec: session-based recommendation with recurrent neural networks.

Hidasi, Karatzoglou, Baltrunas & Tikk, "Session-based Recommendations with Recurrent Neural Networks",
ICLR 2016. A GRU reads a user's last `max_len` items in order; its state after each item, projected to
the item space and times the item table (tied to the input embeddings), scores the next item. Trained
with a softmax over the whole catalogue by default (as the strong GRU4Rec baselines of Hidasi &
Czapp, RecSys 2023, and RecBole's benchmark).
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.models._sequence import SequenceModel


class GRU4Rec(SequenceModel):
    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 64, max_len: int = 50, hidden_dim: int = 128,
                 num_layers: int = 1, dropout: float = 0.2):
        super().__init__(n_users, n_items, embedding_dim, max_len)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(embedding_dim, hidden_dim, num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.project = nn.Linear(hidden_dim, embedding_dim)  # hidden state -> item space (the tied table)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.drop(self.item(seq)))  # [B, L, d] -> [B, L, hidden]; a GRU is causal
        return self.project(self.drop(out))  # [B, L, d]
