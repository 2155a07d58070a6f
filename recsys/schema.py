"""Column names of the normalised tables, and the two tasks' traits, in one place."""

from dataclasses import dataclass

from recsys.errors import RecsysError

USER = "user"
ITEM = "item"
RATING = "rating"
TIMESTAMP = "timestamp"
# each interaction's place in its user's history (0 = first): by timestamp, then the split's tie rule.
# One definition of order, recorded by prepare, read by training, evaluation and serving alike.
POSITION = "position"

# users table (raw features; whichever the dataset has)
AGE = "age"
GENDER = "gender"
OCCUPATION = "occupation"
ZIP = "zip"
# items table
TITLE = "title"
YEAR = "year"
GENRES = "genres"  # '|'-joined genre names

RAW_ID = "raw_id"  # the dataset's own id, kept beside the contiguous index

LOSS_NAMES = ("mse", "bce", "bpr", "sampled_softmax", "softmax")  # what `loss:` may name besides auto
SEQUENCE_LOSS_NAMES = ("softmax", "sampled_softmax", "bce")  # what trains a next-item model (recsys/training/losses.py)


@dataclass(frozen=True)
class Task:
    """What a task is judged and trained by: every step, the report, tuning and the registry read it here.

    metric / mode: the headline metric (`<split>/<metric>`) and whether lower or higher is better; the
    model selection metric on validation, early stopping's, tuning's objective and the champion rule.
    label: how a person reads it. unit: what a per-user paired difference of it is in (the report and the
    registry). sampled: the headline of the sampled-negatives protocol (implicit only).
    columns: the test metrics the report and main's leaderboard show, headline first.
    loss: what `loss: auto` trains a model with (sequence models and large catalogues: config.resolve_loss).
    losses: the losses its data can train. split: the split prepare and main use when split=auto (their default)."""
    name: str
    metric: str
    mode: str
    label: str
    unit: str
    sampled: str
    columns: tuple[str, ...]
    loss: str
    losses: tuple[str, ...]
    split: str

    def key(self, split: str = "val") -> str:
        return f"{split}/{self.metric}"

    @property
    def direction(self) -> str:  # Optuna's word for the mode
        return "minimize" if self.mode == "min" else "maximize"

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b


TASKS = {"rating": Task("rating", "rmse", "min", "RMSE", "MSE", "", ("rmse", "mae"), "mse", ("mse",), "random"),
         "implicit": Task("implicit", "ndcg_at_10", "max", "NDCG@10", "NDCG@10", "sampled_ndcg_at_10",
                          ("ndcg_at_10", "hr_at_10", "sampled_ndcg_at_10", "sampled_hr_at_10", "coverage_at_10"),
                          "bce", LOSS_NAMES, "leave_last_out")}
RANKING = TASKS["implicit"]  # the ranking headline (its cut-off: RANKING_K), read by ranking code of either task
RANKING_K = 10


def task_of(name: str) -> Task:
    if name not in TASKS:
        raise RecsysError(f"task={name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name]


SPLITS = ("random", "temporal", "leave_last_out")
TIE_BREAKS = ("random", "item_id")  # leave_last_out: order among interactions sharing a timestamp

# Scale. A catalogue of more items than this is "large" (ML-20M's 26,744 and above; ML-10M's 10,681
# below): `loss: auto` trains a catalogue scorer with the sampled softmax there instead of the full one
# (a [batch x 59,047] logit matrix per step on ML-25M), and a model file's `large:` overlay applies.
LARGE_CATALOGUE = 20_000
# `updates: auto` updates embedding tables row by row (only the rows a batch reads) once the model's
# tables hold more rows than this; below it a dense step over every row costs less than the bookkeeping
# (recsys/training/optim.py; ML-10M's 80k rows and above, ML-1M's 9.7k below).
ROW_UPDATES_MIN_ROWS = 50_000
