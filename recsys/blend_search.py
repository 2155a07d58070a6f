"""The implicit blend's weight search, in memory that does not grow with the catalogue.

A weighting w on the simplex ranks item j ahead of a target t when sum_m w_m (z_mj - z_mt) >= 0 (z: the
members' standardised scores; ties rank ahead, as evaluation ranks them). Items ahead of t for every
member are ahead for every w; items ahead for no member never are. So each target needs only its count
of always-ahead items A and the members' differences on the items that are ahead for some members but
not all (the contested items); a target with A > K is outside the top K for every weighting (its
NDCG@K is 0 whatever the weights) and needs nothing more. The members score the users in blocks of at
most BLOCK_FLOATS scores, which are then dropped: the peak is that block plus the contested store.
Members that agree contest few items whatever the catalogue; members that disagree (or a cold user's
fallback against none) can contest many, so the store is capped at `cap` bytes (STORE_BYTES) and a fit
past it is refused in one line naming what to lower.

The store gives exactly the ranks the evaluator's full ranking gives (up to float rounding in exact
ties), so every candidate weighting costs one product over the contested items, not a ranking of the
catalogue.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from recsys import metrics
from recsys.errors import RecsysError
from recsys.schema import RANKING_K

BLOCK_FLOATS = 1 << 25  # member scores held at once while building the store (128 MiB of float32)
STORE_BYTES = 1 << 30  # the store's cap: past it the fit is refused in one line (fewer users, or fewer members)
FOLDS = 5  # cross-fitting: validation users in this many folds, all of a user's rows in one
GRID_MEMBERS = 4  # the whole 0.1 grid on the simplex up to this many members (286 points); greedy above


def simplex_grid(m: int, step: float = 0.1):
    """Weights >= 0 summing to 1, on a grid."""
    n = round(1 / step)
    for c in itertools.product(range(n + 1), repeat=m - 1):
        if sum(c) <= n:
            yield np.array([*c, n - sum(c)], dtype=np.float64) / n


def greedy_simplex(m: int, score, step: float = 0.1) -> tuple[np.ndarray, float]:
    """Ensemble selection with replacement (Caruana et al., ICML 2004): start from the best member alone,
    then `1 / step - 1` times add a `step`-sized share to whichever member raises `score(weights)` most
    (the weights are the shares' counts, normalised); returns the best step's weights and value (a later
    step can score lower: every step must add a share). m * (1 / step) evaluations."""
    n = round(1 / step)
    counts = np.zeros(m)
    best, best_value = None, -np.inf
    for _ in range(n):
        tried = []
        for j in range(m):
            c = counts.copy()
            c[j] += 1
            tried.append((score(c / c.sum()), j))
        value, j = max(tried, key=lambda t: (t[0], -t[1]))
        counts[j] += 1
        if value > best_value:  # the weights of the best step, not the last one's
            best, best_value = counts / counts.sum(), value
    return best, float(best_value)


def user_folds(users: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """A fold number per entry of `users` (ids, repeated for a user's rows), the same for a user's rows."""
    uniq, inverse = np.unique(users, return_inverse=True)
    return (np.random.default_rng([int(seed), 104729]).permutation(len(uniq)) % folds)[inverse]


class RankStore:
    """Every validation target's rank under any weighting of the members, from what it needs alone.

    always [n, R]: items ahead of the target for every member (inf for padding); diffs [c, m]: the
    members' score differences (item - target) on each contested item; owner [c]: its flat target index.
    """

    def __init__(self, blend, users: np.ndarray, targets: np.ndarray, exclude, n_items: int, k: int = RANKING_K,
                 cold=None, fallback=None, block_floats: int = BLOCK_FLOATS, cap: int = STORE_BYTES):
        m = len(blend.members)
        n, r_max = targets.shape
        self.shape, self.k = (n, r_max), k
        self.always = np.full((n, r_max), np.inf)
        diffs, owners, held = [], [], self.always.nbytes
        bs = max(1, block_floats // (m * n_items))
        for s in range(0, n, bs):
            u = users[s:s + bs]
            with torch.no_grad():
                z = torch.stack(blend.member_blocks(torch.as_tensor(u), n_items))  # [m, b, n_items]
            if cold is not None and cold[s:s + bs].any():  # ranked by the fallback whatever the weights
                z[:, torch.as_tensor(cold[s:s + bs])] = fallback.float()
            rows, seen = exclude.pairs(u)
            z[:, torch.as_tensor(rows), torch.as_tensor(seen)] = -torch.inf
            t = torch.as_tensor(targets[s:s + bs])
            for col in range(r_max):
                valid = (t[:, col] >= 0).numpy()
                zt = z.gather(2, t[:, col].clamp(min=0)[None, :, None].expand(m, -1, 1))  # [m, b, 1]
                ahead = z >= zt  # [m, b, n_items]
                every, some = ahead.all(0), ahead.any(0)
                a = every.sum(1).numpy().astype(np.float64)
                self.always[s:s + bs, col] = np.where(valid, a, np.inf)
                open_rows = torch.as_tensor(valid & (a <= k))
                contested = (some & ~every) & open_rows[:, None]
                b_idx, j_idx = contested.nonzero(as_tuple=True)
                if len(b_idx):
                    diffs.append((z[:, b_idx, j_idx] - zt[:, b_idx, 0]).T.numpy().astype(np.float32))
                    owners.append(((s + b_idx.numpy()) * r_max + col).astype(np.int64))
                    held += diffs[-1].nbytes + owners[-1].nbytes
                    if held > cap:
                        raise RecsysError(
                            f"the blend's members disagree on too many items to search their weights in "
                            f"{cap / 2 ** 30:.1f} GiB (past {min(s + bs, n):,} of {n:,} validation users); blend fewer "
                            "members, or leave out the one that ranks least like the others")
            del z
        self.diffs = np.concatenate(diffs) if diffs else np.zeros((0, m), np.float32)
        self.owner = np.concatenate(owners) if owners else np.zeros(0, np.int64)

    @property
    def nbytes(self) -> int:
        return self.diffs.nbytes + self.owner.nbytes + self.always.nbytes

    def ranks(self, w: np.ndarray) -> np.ndarray:
        """[n, R] ranks under weights `w` (exact where they are <= K; above K only 'more than K' matters)."""
        ahead = (self.diffs @ np.asarray(w, dtype=np.float32)) >= 0
        extra = np.bincount(self.owner[ahead], minlength=self.shape[0] * self.shape[1]).reshape(self.shape)
        return self.always + extra

    def ndcg_per_user(self, w: np.ndarray) -> np.ndarray:
        return metrics.ndcg_per_user(self.ranks(w), self.k)


def search_weights(store: RankStore, m: int, step: float = 0.1, progress=None, seed: int = 0,
                   users: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """(weights, in-sample validation NDCG, out-of-fold NDCG per user): the point on the simplex whose
    weighted sum of the members' standardised scores ranks the validation targets best; and, cross-fitted,
    each user's NDCG under the weights chosen without their fold (folds by `users`). Each candidate
    weighting is scored once for every user (cached), so the folds cost no more. `progress(done, total,
    best)` is called as candidates are scored."""
    n = store.shape[0]
    users = np.arange(n) if users is None else users
    total = sum(1 for _ in simplex_grid(m, step)) if m <= GRID_MEMBERS else (FOLDS + 1) * m * round(1 / step)
    cache: dict[tuple, np.ndarray] = {}

    def per_user(w) -> np.ndarray:
        key = tuple(np.round(w, 9))
        if key not in cache:
            cache[key] = store.ndcg_per_user(w)
            if progress and (len(cache) % 25 == 0 or len(cache) == total):
                progress(len(cache), total, max(float(v.mean()) for v in cache.values()))
        return cache[key]

    def best_on(rows: np.ndarray) -> np.ndarray:
        score = lambda w: float(per_user(w)[rows].mean())  # noqa: E731
        if m > GRID_MEMBERS:
            return greedy_simplex(m, score, step)[0]
        best, value = None, -1.0
        for w in simplex_grid(m, step):
            v = score(w)
            if v > value + 1e-12:
                best, value = w, v
        return best

    weights = best_on(np.ones(n, dtype=bool))
    fold = user_folds(users, FOLDS, seed)
    oof = np.empty(n)
    for f in range(FOLDS):
        held = fold == f
        if held.any():
            oof[held] = per_user(best_on(~held))[held]
    return weights, float(per_user(weights).mean()), oof
