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

    pads_inertly = True  # the GRU reads only a window's items (packed): a batch may drop its padded columns

    @classmethod
    def position_flops(cls, embedding_dim: int = 64, max_len: int = 50, hidden_dim: int = 128, num_layers: int = 1,
                       **hp) -> float:
        """A step of each layer: three gates over its input and the hidden state; then the projection."""
        d, h = embedding_dim, hidden_dim
        gates = 6 * h * (d + h) + 6 * h * h * 2 * (num_layers - 1)
        return 3 * (gates + 2 * h * d)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L] left-padded windows -> [B, L, d]: the GRU starts at each window's first item, never at its
        padding (packed, so a window of 9 items in 50 columns costs 9 steps), and its state after each
        item, projected to the item space, is that position's output (zeros projected at the padding)."""
        x = self.drop(self.item(seq))  # [B, L, d]
        n, width = seq.shape
        length = (seq > 0).sum(1)
        if bool((length == width).all()):
            out, _ = self.gru(x)
        else:  # right-align the items, run the GRU over each window's own length, then back to the left padding
            shift = (width - length)[:, None]
            col = torch.arange(width, device=seq.device)[None, :]
            to_right = ((col + shift) % width)[..., None]
            packed = nn.utils.rnn.pack_padded_sequence(x.gather(1, to_right.expand(-1, -1, x.shape[-1])),
                                                       length.clamp(min=1).cpu(), batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.gru(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=width)
            out = out.gather(1, ((col - shift) % width)[..., None].expand(-1, -1, out.shape[-1]))
        return self.project(self.drop(out))  # [B, L, d]
