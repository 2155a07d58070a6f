"""Column names of the normalised tables, in one place."""

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

TASKS = ("rating", "implicit")
SPLITS = ("random", "temporal", "leave_last_out")
TIE_BREAKS = ("random", "item_id")  # leave_last_out: order among interactions sharing a timestamp
