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


RANKING_K = 10  # the ranking headline's cut-off: every @K metric name below is built from it
_K = f"_at_{RANKING_K}"
TASKS = {"rating": Task("rating", "rmse", "min", "RMSE", "MSE", "", ("rmse", "mae"), "mse", ("mse",), "random"),
         "implicit": Task("implicit", f"ndcg{_K}", "max", f"NDCG@{RANKING_K}", f"NDCG@{RANKING_K}", f"sampled_ndcg{_K}",
                          (f"ndcg{_K}", f"hr{_K}", f"sampled_ndcg{_K}", f"sampled_hr{_K}", f"coverage{_K}"),
                          "bce", LOSS_NAMES, "leave_last_out")}
RANKING = TASKS["implicit"]  # the ranking headline (its cut-off: RANKING_K), read by ranking code of either task


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

# prepare's parameters and their defaults, once: steps/prepare.py, main's and train's default data read
# them, and tests/test_docs.py holds MLproject's prepare entry point to them. split "auto": the task's own.
PREPARE_DEFAULTS = {"dataset": "ml-100k", "task": "rating", "split": "auto", "val_frac": 0.1, "test_frac": 0.1,
                    "positive_threshold": 4.0, "min_user_ratings": 0, "min_item_ratings": 0, "eval_negatives": 99,
                    "seed": 42, "tie_break": "random", "n_users": 943, "n_items": 1682, "n_ratings": 100_000}


def prepare_param(name: str) -> str:
    """A prepare default as MLflow records the param (4.0 -> "4")."""
    v = PREPARE_DEFAULTS[name]
    return f"{v:g}" if isinstance(v, float) else str(v)
