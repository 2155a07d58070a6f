"""The training recipe of a next-item model, chosen from the work its data costs, never from a size
threshold (DESIGN principle 9).

The catalogue softmax of an epoch costs about 6 x positions x items x width floating-point operations
(the [positions, items] logits, made once, and the two gradient products: training.fused), and the
encoder its own work per position (the model's `position_flops`). Where both fit the per-epoch budget
(`epoch_tflop`), `loss: auto` is the full softmax; where they do not, a sampled softmax over as many
shared negatives as the rest of the budget allows (a power of two, at least MIN_NEGATIVES; log-Q
corrected), through the same fused pass, so a negative costs what a catalogue item costs. The per-epoch validation ranks every user
when their states and the ranking cost at most a tenth of the budget, else a seeded sample that does. Early
stopping counts epochs of at most EPOCH_STEPS optimizer steps: an epoch of more steps counts for more, so
min_epochs and patience shrink on large data (never below MIN_PATIENCE), with no cap on the epochs.
What was chosen, and why, is one line (`why`) that training prints and the run records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLOPS_PER_LOGIT = 6  # per position x item x width: the logits (2), the two gradients (4)
MIN_NEGATIVES = 256  # the sampled softmax's floor (Klenitskiy & Vasilev: thousands beat hundreds where affordable)
VALIDATION_SHARE = 0.1  # of the budget: the per-epoch validation ranking
EPOCH_STEPS = 100  # early stopping counts epochs of at most this many steps
MIN_PATIENCE = 2


@dataclass
class Recipe:
    loss: str
    num_negatives: int
    val_users: int
    min_epochs: int
    patience: int
    why: str

    def params(self) -> dict:
        return {"recipe.loss": self.loss, "recipe.num_negatives": self.num_negatives,
                "recipe.val_users": self.val_users, "recipe.min_epochs": self.min_epochs,
                "recipe.patience": self.patience}


def choose(loss: str, num_negatives: int, val_users: int, min_epochs: int, patience: int, epoch_tflop: float,
           n_positions: int, n_items: int, n_val_users: int, width: int, batches: int,
           position_flops: float = 0.0, max_len: int = 50) -> Recipe:
    """The recipe for `loss` (`auto` is decided here; any other loss is kept with its num_negatives).
    `position_flops`: the encoder's work for a position (forward and backward), counted against the budget
    before the softmax's; a validation user's state costs a forward over `max_len` positions."""
    budget = epoch_tflop * 1e12
    encoder = position_flops * n_positions
    full = FLOPS_PER_LOGIT * n_positions * n_items * width
    per_negative = FLOPS_PER_LOGIT * n_positions * width
    why = []
    if loss == "auto":
        if encoder + full <= budget:
            loss, why = "softmax", [f"full softmax: {n_positions:,} positions x {n_items:,} items x {width} = "
                                    f"{full / 1e12:.2f} TFLOP an epoch, and the encoder {encoder / 1e12:.2f}, "
                                    f"within the {epoch_tflop:g} TFLOP budget"]
        else:
            fits = int(max(budget - encoder, 0) // max(per_negative, 1))
            num_negatives = min(max(MIN_NEGATIVES, 1 << max(fits, 1).bit_length() - 1), max(1, n_items // 2))
            loss = "sampled_softmax"
            why = [f"sampled softmax over {num_negatives:,} shared negatives: the full one would cost "
                   f"{full / 1e12:.1f} TFLOP an epoch ({n_positions:,} positions x {n_items:,} items x {width}), "
                   f"beside the encoder's {encoder / 1e12:.2f}, over the {epoch_tflop:g} TFLOP budget"]
    else:
        why = [f"loss={loss} as asked"]
    if not val_users:  # a user's state (the encoder forward over a window) and the ranking of the catalogue
        per_user = 2 * n_items * width + max_len * position_flops / 3
        if n_val_users * per_user > VALIDATION_SHARE * budget:
            val_users = max(1, int(VALIDATION_SHARE * budget // per_user))
            why.append(f"validation on {val_users:,} of {n_val_users:,} users")
    scale = EPOCH_STEPS / max(batches, EPOCH_STEPS)  # an epoch of more steps counts for more
    min_e = min(min_epochs, math.ceil(min_epochs * scale))
    pat = min(patience, max(MIN_PATIENCE, math.ceil(patience * scale)))
    if (min_e, pat) != (min_epochs, patience):
        why.append(f"min_epochs {min_e}, patience {pat} for epochs of {batches:,} steps")
    return Recipe(loss, num_negatives, val_users, min_e, pat, "; ".join(why))
