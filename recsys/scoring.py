"""A trained model for inference, without Lightning: evaluate, serving and recommend load this.

Importing pytorch_lightning costs seconds per process; scoring needs only the model and the output
transform, rebuilt from a checkpoint's plain hyper-parameters and tensors (`weights_only=True`: a
checkpoint is never unpickled into code).
"""

from __future__ import annotations

from pathlib import Path

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


def servable(checkpoint: str | Path, module, data, out: str | Path) -> Path:
    """A trained model's weights as it is served: a sequence model answers a known user from all of their
    history (every split), the others as they were trained."""
    from recsys.data import history

    model = module.model
    known = history.histories(history.before(data), data.n_users, model.max_len) if model.uses_history else None
    return export_weights(checkpoint, out, known)


def export_weights(checkpoint: str | Path, out: str | Path, history: torch.Tensor | None = None) -> Path:
    """The part of a training checkpoint serving needs (hyper-parameters and weights; no optimizer or
    loop state): a third of the size for Adam-trained models. A sequence model's `history` buffer is
    replaced by `history` (everything known of each user: what a served model answers from)."""
    ck = safe_load(checkpoint)
    state = dict(ck["state_dict"])
    if history is not None and "model.history" in state:
        state["model.history"] = history.to(state["model.history"].dtype)
    torch.save({"hyper_parameters": dict(ck["hyper_parameters"]), "state_dict": state}, str(out))
    return Path(out)
