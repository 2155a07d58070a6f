"""ItemKNN: a user's score for item j is the sum of the similarities between j and the items they had,
over each item's k most similar items (Sarwar et al., "Item-based collaborative filtering recommendation
algorithms", WWW 2001; Deshpande & Karypis, "Item-based top-N recommendation algorithms", TOIS 2004).

similarity: cosine (co-occurrences / (sqrt(n_i n_j) + shrink)) or jaccard (co-occurrences / (n_i + n_j -
co-occurrences + shrink)); `shrink` damps similarities supported by few users (as in Dacrema et al.'s
tuned baselines, RecSys 2019). Only the top `k` neighbours of each item are kept ([n_items, k]: sparse,
so it fits ML-25M's catalogue), computed from the user x item matrix in blocks of items.
"""

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from recsys.models._item_item import ItemItem

BLOCK_CELLS = 1 << 24  # a block of items x the catalogue computed at once (64 MB of float32)


class ItemKNN(ItemItem):
    def __init__(self, n_users: int, n_items: int, k: int = 100, shrink: float = 10.0, similarity: Literal["cosine", "jaccard"] = "cosine"):
        super().__init__(n_users, n_items)
        self.k, self.shrink, self.similarity = min(k, max(n_items - 1, 1)), float(shrink), similarity
        self.register_buffer("neighbours", torch.zeros(n_items, self.k, dtype=torch.int64))  # [n_items, k]
        self.register_buffer("weights", torch.zeros(n_items, self.k))  # [n_items, k]

    def _fit_items(self, users: np.ndarray, items: np.ndarray) -> None:
        n_users, n = self.seen_indptr.numel() - 1, self.n_items
        x = sp.csc_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n))
        counts = np.asarray(x.sum(0)).ravel()  # [n_items] users per item
        xt = x.T.tocsr()
        block = max(1, BLOCK_CELLS // max(n, 1))
        for s in range(0, n, block):
            e = min(n, s + block)
            co = torch.from_numpy((xt[s:e] @ x).toarray())  # [b, n_items] co-occurrences
            c = torch.from_numpy(counts)
            if self.similarity == "jaccard":
                sim = co / (c[s:e, None] + c[None, :] - co + self.shrink).clamp(min=1e-12)
            else:
                sim = co / (torch.sqrt(c[s:e, None] * c[None, :]) + self.shrink).clamp(min=1e-12)
            sim[torch.arange(e - s), torch.arange(s, e)] = 0.0  # an item is not its own neighbour
            top = sim.topk(self.k, dim=1)
            self.neighbours[s:e], self.weights[s:e] = top.indices, top.values.float()

    def _propagate(self, rows: torch.Tensor, items: torch.Tensor, b: int) -> torch.Tensor:
        out = torch.zeros(b, self.n_items, device=self.weights.device)
        nb, w = self.neighbours[items], self.weights[items]  # [P, k]
        out.index_put_((rows[:, None].expand_as(nb), nb), w, accumulate=True)
        return out
