"""A trained model for inference, without Lightning: evaluate, serving and recommend load this.

Importing pytorch_lightning costs seconds per process; scoring needs only the model and the output
transform, rebuilt from a checkpoint's plain hyper-parameters and tensors (`weights_only=True`: a
checkpoint is never unpickled into code).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from recsys.errors import RecsysError
from recsys.models import build_model
from recsys.models.base import output, rating_range


class Scorer(nn.Module):
    """`scorer(user, item)` -> predictions; `scorer.model` -> raw scores for ranking."""

    def __init__(self, model: nn.Module, task: str, rating_min: float, rating_max: float):
        super().__init__()
        self.model = model
        self.task = task
        self.lo, self.hi = rating_range(rating_min, rating_max)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return output(self.model(user, item), self.task, self.lo, self.hi)

    def predictions(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw scores (a ranking's) -> what `forward` returns for the same pairs."""
        return output(raw, self.task, self.lo, self.hi)


def safe_load(checkpoint: str | Path) -> dict:
    """torch.load with weights_only=True: tensors and plain values only, never arbitrary pickled code."""
    try:
        return torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as e:
        import re

        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
        why = re.search(r"Unsupported global: GLOBAL [^\s]+|Unsupported operand \d+", text)
        reason = why.group(0) if why else (text.splitlines()[0].split(". ")[0][:120] if text else type(e).__name__)
        raise RecsysError(f"checkpoint {Path(checkpoint).name} was refused: it holds more than tensors and plain "
                          f"values ({reason}); load models only from stores you trust") from None


def load_scorer(checkpoint: str | Path) -> Scorer:
    ck = safe_load(checkpoint)
    try:
        hp = ck["hyper_parameters"]
        model = build_model(hp["model_name"], hp["n_users"], hp["n_items"], hp["features"], **hp["model_hparams"])
        state = {k.removeprefix("model."): v for k, v in ck["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as e:
        raise RecsysError(f"checkpoint {Path(checkpoint).name} is not a recsys model checkpoint "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    scorer = Scorer(model, hp["task"], hp["rating_min"], hp["rating_max"]).eval()
    scorer.hparams = hp  # what the model was built from (a blend stores its members')
    return scorer


def pair_scores(scorer: Scorer, known, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score [n] float64, fallback [n] str) of (user, item) pairs, codes with -1 for an id the data does
    not hold: the model's prediction, or where `known` (recsys.data.known) calls the pair cold its answer,
    named in `fallback`. Ratings: the item's damped mean ("item_mean"; "global_mean" for an item never
    rated); implicit: a cold user's item its popularity share ("popularity"), an unknown item 0
    ("unknown_item"). What evaluation scores, the blend fits and a served model answers."""
    u, i = np.asarray(u, dtype=np.int64), np.asarray(i, dtype=np.int64)
    rating = known.task == "rating"
    if rating:
        cold, score = known.cold_rating(u, i)
        unrated = (i < 0) | (known.popularity[np.maximum(i, 0)] == 0)
        fallback = np.where(cold, np.where(unrated, "global_mean", "item_mean"), "").astype(object)
    else:
        item_ok = i >= 0
        cold = known.cold(u, scorer.model.answers_histories) | ~item_ok
        score = np.zeros(len(u))
        score[item_ok] = known.popularity_share(i[item_ok])
        fallback = np.where(cold, np.where(item_ok, "popularity", "unknown_item"), "").astype(object)
    if (~cold).any():
        with torch.no_grad():
            score[~cold] = scorer(torch.as_tensor(u[~cold]), torch.as_tensor(i[~cold])).double().numpy()
    return score, fallback


def servable(checkpoint: str | Path, out: str | Path) -> Path:
    """The part of a training checkpoint serving needs (hyper-parameters and weights; no optimizer or
    loop state): a third of the size for Adam-trained models. What the model knows of each user is not
    in it: the served model is given that from its tables (recsys/data/known.py), as evaluation is."""
    ck = safe_load(checkpoint)
    torch.save({"hyper_parameters": dict(ck["hyper_parameters"]), "state_dict": dict(ck["state_dict"])}, str(out))
    return Path(out)
