"""EASE: an item x item weight matrix B with a zero diagonal, in closed form: B = I - P diag(1 / diag(P)),
P = (X^T X + l2 I)^-1; a user's scores are their item vector times B (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019).

B is dense: [n_items, n_items] float32, and fitting holds about three such matrices (the Gram matrix,
its inverse, B), so catalogues above `max_items` are refused in one line naming the memory they need;
ItemKNN (sparse top-k neighbours) covers larger ones.
"""

import numpy as np
import scipy.sparse as sp
import torch

from recsys.models._item_item import ItemItem


class EASE(ItemItem):
    max_items = 20_000  # 3 x 20,000^2 float32 = 4.5 GiB while fitting

    def __init__(self, n_users: int, n_items: int, l2: float = 500.0):
        super().__init__(n_users, n_items)
        self.l2 = float(l2)
        self.register_buffer("B", torch.zeros(n_items, n_items))  # [n_items, n_items]

    def _fit_items(self, users: np.ndarray, items: np.ndarray) -> None:
        n_users, n = self.seen_indptr.numel() - 1, self.n_items
        x = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n))
        g = torch.from_numpy((x.T @ x).toarray().astype(np.float64))  # [n, n] Gram matrix
        g.diagonal().add_(self.l2)
        p = torch.linalg.inv(g)
        b = -p / p.diagonal()[None, :]
        b.diagonal().zero_()
        self.B.copy_(b.float())

    def _propagate(self, rows: torch.Tensor, items: torch.Tensor, b: int) -> torch.Tensor:
        x = torch.zeros(b, self.n_items, device=self.B.device)
        x[rows, items] = 1.0
        return x @ self.B
