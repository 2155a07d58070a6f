"""EASE: an item x item weight matrix B with a zero diagonal, in closed form: B = I - P diag(1 / diag(P)),
P = (X^T X + l2 I)^-1; a user's scores are their item vector times B (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019).

B is dense: [n_items, n_items] float32. The fit holds that one matrix and works in place in it: the Gram
matrix is written into it a block of columns at a time, LAPACK's Cholesky factorises it and inverts it
in place (spotrf, spotri), and B is formed from P where P lies. `fit_bytes` is that memory, what
config.load checks against the memory the machine has available, and what every fit prints;
bench/ease_memory.py measures the fit's peak against it.
"""

import sys

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import lapack

from recsys.errors import RecsysError
from recsys.models._item_item import ItemItem

PROPAGATE_CELLS = 1 << 22  # rows of B gathered at once when scoring (16 MiB of float32)
BLOCK_CELLS = 1 << 24  # Gram columns computed at once: [n_items, block] (64 MiB of float32 at most, dense)


def fit_bytes(n_items: int) -> int:
    """Bytes an EASE fit holds beyond its data: the [n, n] float32 matrix, a block of Gram columns as a
    dense array and as scipy's sparse product (float32 values + int32 indices: 3 x the dense block at
    most), and a copy of the diagonal."""
    block = min(n_items, max(1, BLOCK_CELLS // max(n_items, 1))) * n_items * 4
    return n_items * n_items * 4 + 4 * block + 8 * n_items


class EASE(ItemItem):
    fit_bytes = staticmethod(fit_bytes)

    def __init__(self, n_users: int, n_items: int, l2: float = 500.0):
        super().__init__(n_users, n_items)
        self.l2 = float(l2)
        # [n_items, n_items]; empty: its pages are only resident once written (by fit or a loaded checkpoint)
        self.register_buffer("B", torch.empty(n_items, n_items))

    def _fit_items(self, users: np.ndarray, items: np.ndarray) -> None:
        n_users, n = self.seen_indptr.numel() - 1, self.n_items
        print(f"ease: fitting {n:,} x {n:,} items in float32, about {fit_bytes(n) / 2 ** 30:.2f} GiB",
              file=sys.stderr, flush=True)
        x = sp.csc_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n))
        xt = x.T.tocsr()
        g = self.B.numpy()  # [n, n], C order; filled in place
        step = max(1, BLOCK_CELLS // max(n, 1))
        for s in range(0, n, step):  # the Gram matrix's columns s:e ([n, e - s]), rows s:e of it by symmetry
            g[s:s + step] = (xt @ x[:, s:s + step]).toarray().T
        g[np.diag_indices(n)] += self.l2
        # C-order g is F-order g.T, the same symmetric matrix: LAPACK works in place on it (no copy)
        f = g.T
        _, info = lapack.spotrf(f, lower=0, overwrite_a=1, clean=0)
        if info == 0:
            _, info = lapack.spotri(f, lower=0, overwrite_c=1)
        if info != 0:
            raise RecsysError(f"ease: X^T X + l2 I is not positive definite in float32 (LAPACK info {info}); "
                              "raise l2")
        # spotri wrote P's upper triangle (of f, column-major): the lower of g; mirror it, a block at a time
        for s in range(0, n, step):
            e = min(n, s + step)
            g[s:e, e:] = g[e:, s:e].T
            blk = g[s:e, s:e]
            blk[np.triu_indices(e - s, 1)] = blk.T[np.triu_indices(e - s, 1)]
        d = np.diagonal(g).copy()  # [n] diag(P)
        g /= -d[None, :]  # B = -P / diag(P) (column-wise), in place
        g[np.diag_indices(n)] = 0.0

    def _propagate(self, rows: torch.Tensor, items: torch.Tensor, b: int) -> torch.Tensor:
        """Each user's row of B summed over their items: (user, item) pairs x n, not users x n x n (a dense
        [b, n] indicator times B would cost the whole catalogue squared per user)."""
        out = torch.zeros(b, self.n_items, device=self.B.device)
        step = max(1, PROPAGATE_CELLS // max(self.n_items, 1))
        for s in range(0, len(rows), step):
            out.index_add_(0, rows[s:s + step], self.B[items[s:s + step]])
        return out
