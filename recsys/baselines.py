"""Closed-form baselines, shared by the baseline models and the serving fallback (numpy only)."""

from __future__ import annotations

import numpy as np

# pseudo-ratings at the global mean that shrink an item's mean rating towards it (Koren 2010's damped
# means): the popularity model's default and what the served model answers for an unknown user
DAMPING = 2.0


def item_counts(item: np.ndarray, n_items: int) -> np.ndarray:
    """[n_items] training interactions per item."""
    return np.bincount(np.asarray(item, dtype=np.int64), minlength=n_items).astype(np.float64)


def damped_item_means(item: np.ndarray, rating: np.ndarray, n_items: int, damping: float = DAMPING) -> np.ndarray:
    """[n_items] (sum of an item's ratings + damping * global mean) / (its count + damping); an item
    never rated gets the global mean."""
    rating = np.asarray(rating, dtype=np.float64)
    total = np.bincount(np.asarray(item, dtype=np.int64), weights=rating, minlength=n_items)
    return (total + damping * rating.mean()) / (item_counts(item, n_items) + damping)
