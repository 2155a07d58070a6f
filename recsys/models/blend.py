"""A blend of finished models: one model whose score is a weighted combination of its members'.

- rating: the members' predicted ratings, weighted, plus an intercept (returned as the logit the
  scorer squashes back into the rating range);
- implicit: each member's raw scores standardised per user over the catalogue (members on different
  scales add up), then weighted and summed. Its served score is the sigmoid of that sum: a ranking
  score, not a probability.

Members are built from their own checkpoint hyper-parameters (`members`: each a train checkpoint's
`hyper_parameters`), so a blend's checkpoint rebuilds it like any model. Members may read what is known of a user
(sequence and item-item models): `set_known` passes it to each. The weights are fitted elsewhere (recsys/blend.py); this file only scores.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys import ranking
from recsys.errors import RecsysError
from recsys.models.base import Model, output, rating_range


def standardise(scores: torch.Tensor) -> torch.Tensor:
    """Per row (user): zero mean, unit standard deviation over the catalogue (a constant row stays 0)."""
    mean = scores.mean(1, keepdim=True)
    sd = scores.std(1, keepdim=True).clamp(min=1e-12)
    return (scores - mean) / sd


class Blend(Model):
    scores_blocks = True

    def __init__(self, n_users: int, n_items: int, members: list[dict], weights: list[float], bias: float,
                 task: str, rating_min: float, rating_max: float):
        super().__init__()
        from recsys.models import build_model  # the registry builds the members (it names this class too)

        self.n_items, self.task, self.bias = n_items, task, float(bias)
        self.specs, self.rating_range = list(members), (rating_min, rating_max)
        self.members = nn.ModuleList(build_model(m["model_name"], m["n_users"], m["n_items"], m["features"],
                                                 **m["model_hparams"]) for m in members)
        # a request's history: answered when every member answers one (sequence and item-item models)
        self.answers_histories = all(m.answers_histories for m in self.members)
        self.max_len = max((m.max_len for m in self.members if m.answers_histories), default=0)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights], dtype=torch.float32))
        self.lo, self.hi = rating_range(rating_min, rating_max)

    def hparams(self) -> dict:
        """The keywords that rebuild this blend (its checkpoint's model_hparams), with its current weights."""
        return {"members": self.specs, "weights": [float(w) for w in self.weights], "bias": self.bias,
                "task": self.task, "rating_min": self.rating_range[0], "rating_max": self.rating_range[1]}

    def _combine(self, raw: list[torch.Tensor]) -> torch.Tensor:
        if self.task == "rating":  # predicted ratings, blended, back to the logit the scorer squashes
            r = sum(w * output(x, "rating", self.lo, self.hi) for w, x in zip(self.weights, raw)) + self.bias
            p = ((r - self.lo) / (self.hi - self.lo)).clamp(1e-6, 1 - 1e-6)
            return torch.log(p) - torch.log1p(-p)
        return sum(w * x for w, x in zip(self.weights, raw))

    def set_known(self, known) -> None:
        for m in self.members:
            m.set_known(known)

    def score_sequences(self, seq: torch.Tensor) -> torch.Tensor:
        """Histories given directly ([b, max_len], most recent last) -> [b, n_items]: a blend of sequence
        models only (a member that scores from the user id alone cannot read a history it was not given)."""
        if not self.answers_histories:
            pair = [type(m).__name__.lower() for m in self.members if not m.answers_histories]
            raise RecsysError(f"this blend holds {', '.join(pair)}, which recommend from the user id alone, so it "
                              "cannot answer a `history`; send the user id only")
        return self._combine([standardise(m.score_sequences(seq[:, seq.shape[1] - m.max_len:]).float())
                              for m in self.members])

    def member_blocks(self, users: torch.Tensor, n_items: int) -> list[torch.Tensor]:
        """Each member's [b, n_items] scores as the blend combines them (standardised for implicit data)."""
        raw = [ranking.score_block(m, users, n_items).float() for m in self.members]
        return raw if self.task == "rating" else [standardise(x) for x in raw]

    def score_block(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        return self._combine(self.member_blocks(users, n_items))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        if self.task == "rating":
            return self._combine([m(user, item).float() for m in self.members])
        # a pair's score on its user's standardised scale: that user's scores over the catalogue
        uniq, inverse = torch.unique(user, return_inverse=True)
        return self.score_block(uniq, self.n_items)[inverse, item]
