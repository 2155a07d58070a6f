"""Column names of the normalised tables, in one place."""

USER = "user"
ITEM = "item"
RATING = "rating"
TIMESTAMP = "timestamp"

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

TASKS = ("rating", "implicit")
SPLITS = ("random", "temporal", "leave_last_out")
TIE_BREAKS = ("random", "item_id")  # leave_last_out: order among interactions sharing a timestamp
# model names, for the steps that check them without importing torch (main); recsys.models.MODELS maps
# the same names to their classes (a test keeps the two equal)
MODEL_NAMES = ("global_mean", "popularity", "mf", "ncf", "fm", "wide_deep", "dcn", "dcnv2", "autoint")


def check_model_name(name: str) -> None:
    from recsys.errors import RecsysError

    if name not in MODEL_NAMES:
        raise RecsysError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
