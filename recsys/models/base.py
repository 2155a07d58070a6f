"""What a model declares about itself; training and ranking read these flags instead of probing."""

from __future__ import annotations

import torch
from torch import nn


class Model(nn.Module):
    """A scorer of (user, item) id pairs: forward(user [B], item [B]) -> raw scores [B]."""

    scores_catalogue = False  # score_matrix(user [b]) -> [b, n_items] (or [b, 1], broadcast): one matmul
    scores_blocks = False  # score_block(users [b], n_items) -> [b, n_items]: each side's fields once
    uses_features = False  # takes the feature widths, and set_tables() hands it the side-feature tables
    closed_form = False  # fit() sets its state from the training data; nothing to optimise
    uses_history = False  # reads each user's ordered history (recsys.models._sequence); trained on sequences
    answers_histories = False  # score_sequences(seq [b, L] item codes + 1, 0-padded) -> [b, n_items]: a request's history;
    # such a model scores a user from their known items alone (set_known), so a user is cold only without any
    pads_inertly = False  # a sequence model whose left padding changes nothing (masked): batches may trim it
    implicit_only = False  # ranks items from interactions: trains on the implicit task only
    fit_bytes = None  # fit_bytes(n_items) -> the bytes its fit holds (config.load refuses what the machine lacks)
    block_pairs: int | None = None  # user x item pairs a ranking block holds (ranking.block_size decides when None)

    def set_tables(self, user_cont, user_cat, item_cont, item_cat) -> None:
        """The side-feature tables (feature-aware models keep them as buffers)."""

    def set_known(self, known) -> None:
        """What is known of each user before the split being scored (recsys.data.known.Known): models that
        score a user from their items read it (their history); the others were given all they read in training."""

    def fit(self, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor, task: str, to_logit) -> None:
        """Closed-form models: their state from the training interactions."""


def rating_range(rating_min: float, rating_max: float) -> tuple[float, float]:
    """A sigmoid never reaches its limits: squash to half a star past both ends of the rating scale."""
    return rating_min - 0.5, rating_max + 0.5


def output(raw: torch.Tensor, task: str, lo: float, hi: float) -> torch.Tensor:
    """Raw model scores -> predictions: a rating in (lo, hi); for implicit data the sigmoid of the raw
    score (a trained model's P(positive); a blend's squashed sum of standardised scores, a ranking score)."""
    return lo + (hi - lo) * torch.sigmoid(raw) if task == "rating" else torch.sigmoid(raw)
