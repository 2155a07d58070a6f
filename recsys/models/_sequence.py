"""What the sequence models share: an item table with a padding row, the users' histories as a buffer,
and scoring a user as the model's state after their history times the item table (output tied to the
input embeddings, as SASRec and GRU4Rec with a softmax over the catalogue do).

Item i is row i + 1 of the table; row 0 is padding. `history` [n_users, max_len] holds each user's
latest items + 1, left-padded, most recent last: set from what is known of each user before the split
being scored (recsys.data.known: train items for validation, train + val for test, everything when served).
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.models.base import Model

STATE_ROWS = 256  # histories encoded at once when scoring, grouped by length


class SequenceModel(Model):
    scores_catalogue = True
    uses_history = True
    answers_histories = True

    def __init__(self, n_users: int, n_items: int, embedding_dim: int, max_len: int):
        super().__init__()
        self.n_items, self.max_len = n_items, max_len
        self.item = nn.Embedding(n_items + 1, embedding_dim, padding_idx=0)
        nn.init.normal_(self.item.weight, std=embedding_dim ** -0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.register_buffer("history", torch.zeros(n_users, max_len, dtype=torch.long), persistent=True)

    def set_known(self, known) -> None:
        """The latest max_len known items of each user ([n_users, max_len] codes + 1, left-padded)."""
        self.history = known.histories(self.max_len).to(self.history.device, torch.long)

    @classmethod
    def position_flops(cls, embedding_dim: int = 64, max_len: int = 50, **hp) -> float:
        """Floating-point operations of the encoder for one position of a training window, forward and
        backward (3x the forward's products): the training recipe counts it beside the softmax's."""
        raise NotImplementedError

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L] item codes + 1 (0 = padding) -> [B, L, d]: the state at each position, having read
        only that position and the ones before it (causal)."""
        raise NotImplementedError

    def state(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, d]: the state after the last (most recent) position. A model whose padding is inert
        reads the histories by length, STATE_ROWS at a time, each group only as wide as its longest: on a
        catalogue of short histories (9 items in 50 columns) that is most of a ranking's encoding saved."""
        if not self.pads_inertly:
            return self.encode(seq)[:, -1]
        length = (seq > 0).sum(1)
        order = torch.argsort(length)
        out = None
        for s in range(0, len(seq), STATE_ROWS):
            rows = order[s:s + STATE_ROWS]
            width = max(1, int(length[rows].max()))
            part = self.encode(seq[rows][:, -width:])[:, -1]
            out = part.new_empty(len(seq), part.shape[-1]) if out is None else out
            out[rows] = part
        return out

    def catalogue(self) -> torch.Tensor:
        """[n_items, d]: the output side of every item (the input table, tied)."""
        return self.item.weight[1:]

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        users, row = torch.unique(user, return_inverse=True)  # each history read once, however many pairs
        return (self.state(self.history[users])[row] * self.item(item + 1)).sum(-1)

    def score_matrix(self, user: torch.Tensor) -> torch.Tensor:
        return self.state(self.history[user]) @ self.catalogue().T

    def score_sequences(self, seq: torch.Tensor) -> torch.Tensor:
        """Histories given directly ([b, L], e.g. an anonymous user's recent items) -> [b, n_items]."""
        return self.state(seq) @ self.catalogue().T
