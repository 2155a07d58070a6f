"""What the item-item models (ItemKNN, EASE) share: a user is scored from the items known of them before
the split being scored (recsys.data.known: train for validation, train + val for test, everything when
served), through an item x item weight (`_propagate`), and a request's history is scored the same way.

The known items are kept as a CSR (`seen_indptr` [n_users + 1], `seen_items` [nnz]): the training
interactions after `fit`, replaced by `set_known`; their length is the data's, so loading a checkpoint
resizes them to what it holds. Scores are raw sums (no probabilities); they rank.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys import ranking
from recsys.errors import RecsysError
from recsys.models.base import Model


class ItemItem(Model):
    scores_catalogue = True
    closed_form = True
    answers_histories = True
    implicit_only = True
    max_len = 200  # the most recent items of a request's history it reads

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.n_items = n_items
        self.register_buffer("seen_indptr", torch.zeros(n_users + 1, dtype=torch.int64))
        self.register_buffer("seen_items", torch.zeros(0, dtype=torch.int64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        held = state_dict.get(prefix + "seen_items")
        if held is not None:  # as many interactions as the data it was fitted on
            self.seen_items = torch.empty_like(held)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit(self, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor, task: str, to_logit) -> None:
        if task != "implicit":
            raise RecsysError(f"{type(self).__name__} ranks items from interactions; prepare the data with task=implicit")
        u, i = user.numpy().astype(np.int64), item.numpy().astype(np.int64)
        order = np.lexsort((i, u))
        u, i = u[order], i[order]
        keep = np.ones(len(u), dtype=bool)
        keep[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])  # one entry per (user, item)
        u, i = u[keep], i[keep]
        n_users = self.seen_indptr.numel() - 1
        self.seen_indptr.copy_(torch.from_numpy(np.concatenate([[0], np.cumsum(np.bincount(u, minlength=n_users))])))
        self.seen_items = torch.from_numpy(i)
        self._fit_items(u, i)

    def set_known(self, known) -> None:
        self.seen_indptr = torch.as_tensor(known.items.indptr, dtype=torch.int64)
        self.seen_items = torch.as_tensor(known.items.indices, dtype=torch.int64)

    def _fit_items(self, users: np.ndarray, items: np.ndarray) -> None:
        """The item x item weights from the distinct (user, item) training pairs."""
        raise NotImplementedError

    def _propagate(self, rows: torch.Tensor, items: torch.Tensor, b: int) -> torch.Tensor:
        """[b, n_items] scores of b item sets given as (row, item) pairs."""
        raise NotImplementedError

    def score_matrix(self, user: torch.Tensor) -> torch.Tensor:
        seen = ranking.CSR(self.seen_indptr.cpu().numpy(), self.seen_items.cpu().numpy())
        rows, items = seen.pairs(user.cpu().numpy())  # (row in `user`, item) of each training interaction
        return self._propagate(torch.as_tensor(rows, device=user.device), torch.as_tensor(items, device=user.device),
                               len(user))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        uniq, inverse = torch.unique(user, return_inverse=True)
        return self.score_matrix(uniq)[inverse, item]

    def score_sequences(self, seq: torch.Tensor) -> torch.Tensor:
        """Histories given directly ([b, L] item codes + 1, 0 = padding): each row's distinct items."""
        rows, cols = torch.nonzero(seq > 0, as_tuple=True)
        pairs = torch.unique(torch.stack([rows, seq[rows, cols] - 1]), dim=1)
        return self._propagate(pairs[0], pairs[1], seq.shape[0])
