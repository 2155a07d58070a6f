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

# Scale. A catalogue of more items than this is "large" (ML-20M's 26,744 and above; ML-10M's 10,681
# below): `loss: auto` trains a catalogue scorer with the sampled softmax there instead of the full one
# (a [batch x 59,047] logit matrix per step on ML-25M), and a model file's `large:` overlay applies.
LARGE_CATALOGUE = 20_000
# `updates: auto` updates embedding tables row by row (only the rows a batch reads) once the model's
# tables hold more rows than this; below it a dense step over every row costs less than the bookkeeping
# (recsys/training/optim.py; ML-10M's 80k rows and above, ML-1M's 9.7k below).
ROW_UPDATES_MIN_ROWS = 50_000
