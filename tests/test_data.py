import hashlib
import zipfile

import numpy as np
import pandas as pd
import pytest

from recsys.data import parsers, sources
from recsys.data import prepare as prep
from recsys.data.negatives import sample_eval_negatives, sample_train_negatives
from recsys.errors import RecsysError
from recsys.schema import ITEM, RATING, TIMESTAMP, USER
from support import zip_folder


# --- parsers: every format gives the same normalised tables -------------------------------------------
def test_ml100k_parser_reads_ratings_users_and_genres(raw):
    assert list(raw.interactions.columns) == [USER, ITEM, RATING, TIMESTAMP]
    assert len(raw.interactions) == 2400
    assert {"age", "gender", "occupation", "zip"} <= set(raw.users.columns)
    assert raw.items["year"].notna().all()
    assert raw.items["genres"].str.len().gt(0).any()


def test_dat_parser_reads_double_colon_files(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n2::10::3::978302109\n2::11::4::978301968\n")
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (tmp_path / "movies.dat").write_bytes("10::Toy Story (1995)::Animation|Children's\n11::Caf\xe9 (1999)::Drama\n".encode("latin-1"))
    raw = parsers.detect_and_parse(tmp_path)
    assert raw.interactions[RATING].tolist() == [5, 3, 4]
    assert raw.items.set_index(ITEM).loc["10", "year"] == 1995
    assert raw.items.set_index(ITEM).loc["11", "title"] == "Caf\xe9"
    assert raw.users.set_index(USER).loc["2", "age"] == 56


def test_movielens_csv_parser_splits_genres_and_years(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,"Grumpier Old Men, The (1995)",(no genres listed)\n')
    raw = parsers.detect_and_parse(tmp_path)
    assert raw.interactions[RATING].tolist() == [4.0, 4.5]
    items = raw.items.set_index(ITEM)
    assert items.loc["3", "title"] == "Grumpier Old Men, The" and items.loc["3", "genres"] == ""
    assert items.loc["1", "genres"] == "Adventure|Animation"


def test_atomic_parser_reads_typed_headers(tmp_path):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t100\n")
    (tmp_path / "x.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n2\tHeat\t1995\tAction Crime\n")
    raw = parsers.detect_and_parse(tmp_path)
    assert raw.interactions.iloc[0].tolist() == ["1", "2", 3.0, 100]
    assert raw.items.iloc[0]["genres"] == "Action|Crime"


def test_generic_csv_accepts_aliases_and_no_timestamp(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("user_id,item_id,score\na,x,1\nb,y,2\n")
    raw = prep.load_raw(str(f))
    assert raw.interactions[RATING].tolist() == [1, 2]
    assert raw.interactions[TIMESTAMP].tolist() == [0, 0]


# --- bad input: one line, names the problem and the fix ---------------------------------------------------
def test_unknown_dataset_name_lists_the_valid_ones():
    with pytest.raises(RecsysError, match="unknown dataset 'ml-7k'.*ml-100k"):
        prep.load_raw("ml-7k")


def test_missing_path_is_named(tmp_path):
    with pytest.raises(RecsysError, match="does not exist"):
        prep.load_raw(str(tmp_path / "nope.csv"))


def test_wrong_columns_are_named(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(RecsysError, match=r"lacks \['user', 'item', 'rating'\]"):
        prep.load_raw(str(f))


def test_non_numeric_rating_names_the_line(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("user,item,rating\n1,1,4\n1,2,five\n")
    with pytest.raises(RecsysError, match="'five' on data row 2"):
        prep.load_raw(str(f))


def test_empty_file_is_an_error(tmp_path):
    f = tmp_path / "empty.csv"
    f.write_text("")
    with pytest.raises(RecsysError, match="empty"):
        prep.load_raw(str(f))


def test_fractions_that_leave_no_training_data_are_refused(raw):
    with pytest.raises(RecsysError, match="leave no training data"):
        prep.prepare(raw, val_frac=0.5, test_frac=0.5)


def test_archive_with_path_traversal_is_refused_and_leaves_nothing(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ml/u.data", "1\t1\t5\t1\n")
        zf.writestr("../escape.txt", "x")
    with pytest.raises(RecsysError, match="unsafe entry"):
        prep.load_raw(str(z))
    assert not (tmp_path.parent / "escape.txt").exists()


def test_corrupt_cached_archive_is_discarded_and_fetched_again(tmp_path, monkeypatch, ml100k_dir):
    good = zip_folder(ml100k_dir)
    served = tmp_path / "served.zip"
    served.write_bytes(good)
    monkeypatch.setitem(sources.DATASETS, "ml-100k",
                        sources.Source(served.as_uri(), hashlib.sha256(good).hexdigest()))
    cache = sources.cache_dir()
    cache.mkdir(parents=True)
    (cache / "ml-100k.zip").write_bytes(b"not the archive")
    raw = prep.load_raw("ml-100k")
    assert len(raw.interactions) == 2400
    assert (cache / "ml-100k.zip").read_bytes() == good
    assert not list(cache.glob(".*part"))


def test_download_with_wrong_checksum_leaves_no_cache_entry(tmp_path, ml100k_dir):
    served = tmp_path / "served.zip"
    served.write_bytes(zip_folder(ml100k_dir))
    dest = tmp_path / "cache" / "x.zip"
    with pytest.raises(RecsysError, match="corrupt"):
        sources.download(served.as_uri(), dest, expected_sha256="0" * 64)
    assert not dest.exists() and not list(dest.parent.iterdir())


def test_when_every_source_fails_the_message_says_what_was_tried(monkeypatch):
    monkeypatch.setitem(sources.DATASETS, "ml-1m", sources.Source("file:///nonexistent/ml-1m.zip"))
    with pytest.raises(RecsysError, match="could not get ml-1m: tried .*by hand"):
        prep.load_raw("ml-1m")


# --- splits, hashes, negatives ---------------------------------------------------------------------------
def test_same_seed_gives_identical_hash_and_another_seed_a_different_one(raw):
    a = prep.prepare(raw, seed=3).meta["content_hash"]
    assert a == prep.prepare(raw, seed=3).meta["content_hash"]
    assert a != prep.prepare(raw, seed=4).meta["content_hash"]


def test_saved_data_reads_back_with_the_same_hash(tmp_path, implicit_data):
    prep.save(implicit_data, tmp_path / "data")
    back = prep.load(tmp_path / "data")
    assert prep.content_hash(back) == implicit_data.meta["content_hash"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_random_split_uses_the_fractions(rating_data):
    c = rating_data.meta["counts"]
    assert (c["train"], c["val"], c["test"]) == (1920, 240, 240)


def test_leave_last_out_holds_out_each_users_latest_interactions(implicit_data):
    d = implicit_data
    for u, row in d.test.set_index(USER).iterrows():
        tr = d.train[d.train[USER] == u]
        va = d.val[d.val[USER] == u]
        assert (tr[TIMESTAMP] <= row[TIMESTAMP]).all()
        assert (va[TIMESTAMP] <= row[TIMESTAMP]).all() and len(va) == 1
    assert d.test[USER].is_unique


def test_temporal_split_has_one_global_cutoff(raw):
    d = prep.prepare(raw, split="temporal", seed=1)
    assert d.train[TIMESTAMP].max() < d.val[TIMESTAMP].min() <= d.val[TIMESTAMP].max() < d.test[TIMESTAMP].min()


def test_eval_negatives_are_distinct_unseen_and_stored(raw, implicit_data):
    d = implicit_data
    seen = set(zip(raw.interactions[USER], raw.interactions[ITEM]))
    users, items = d.users["raw_id"].to_numpy(), d.items["raw_id"].to_numpy()
    for u, g in d.negatives.groupby(USER):
        assert len(g) == 20 and g[ITEM].is_unique
        assert not any((users[u], items[i]) in seen for i in g[ITEM])
    assert set(d.negatives[USER]) == set(d.test[USER]) | set(d.val[USER])


def test_eval_negative_sampler_never_returns_seen_items_even_for_heavy_users():
    rng = np.random.default_rng(0)
    n_items = 50
    seen = np.array(sorted([0 * n_items + i for i in range(40)] + [1 * n_items + 3]), dtype=np.int64)
    out = sample_eval_negatives(np.array([0, 1]), n_items, 10, seen, rng)
    assert sorted(out[0]) == list(range(40, 50))
    assert 3 not in out[1] and len(set(out[1])) == 10


def test_train_negatives_exclude_training_positives():
    rng = np.random.default_rng(0)
    seen = np.array([0, 1, 2, 5 + 0], dtype=np.int64)  # user 0: items 0,1,2; user 1: item 0 (n_items=5)
    users = np.array([0] * 1000 + [1] * 1000)
    neg = sample_train_negatives(users, 5, seen, rng)
    assert not np.isin(neg[:1000], [0, 1, 2]).any() and not (neg[1000:] == 0).any()


def test_implicit_prepare_counts_positives_and_cold_start(implicit_data):
    m = implicit_data.meta
    assert m["n_interactions"] == sum(m["counts"].values())
    assert set(m["cold_start"]) == {"val", "test"}


def test_synthetic_data_is_deterministic_per_seed():
    a = prep.load_raw("synthetic", 30, 40, 300, seed=5).interactions
    b = prep.load_raw("synthetic", 30, 40, 300, seed=5).interactions
    c = prep.load_raw("synthetic", 30, 40, 300, seed=6).interactions
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_non_numeric_rating_in_movielens_csv_names_the_line(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,5\n1,2,abc,6\n")
    with pytest.raises(RecsysError, match="'abc' on data row 2"):
        parsers.parse_movielens_csv(tmp_path)


# --- timestamp ties, duplicates and bad ratings ------------------------------------------------------
def _tied_raw(pad: int = 0, users: int = 40, seed: int = 0) -> parsers.Raw:
    """Every user rates 6 items; their last 3 share one timestamp, so the held-out pair is a tie."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        items = rng.choice([5, 10, 99, 100, 1000, 1001, 7, 42, 500, 12], 6, replace=False)
        for j, i in enumerate(items):
            rows.append((str(u), str(i).zfill(pad), 4.0, 1000 + min(j, 3)))
    df = pd.DataFrame(rows, columns=[USER, ITEM, RATING, TIMESTAMP])
    df[RATING] = df[RATING].astype("float32")
    return parsers.Raw(df)


def _held_out(d: prep.Prepared, part: str) -> set:
    t = d.split(part)
    return {(d.users["raw_id"].iloc[u], int(d.items["raw_id"].iloc[i])) for u, i in zip(t[USER], t[ITEM])}


def test_item_id_tie_rule_ignores_how_ids_are_spelt():
    plain = prep.prepare(_tied_raw(0), task="implicit", split="leave_last_out", tie_break="item_id", eval_negatives=0)
    padded = prep.prepare(_tied_raw(6), task="implicit", split="leave_last_out", tie_break="item_id", eval_negatives=0)
    for part in ("val", "test"):
        assert _held_out(plain, part) == _held_out(padded, part)
    # numeric order: the largest id among the tied is "last" (test), the next largest is val
    for u, g in _tied_raw(0).interactions.groupby(USER):
        tied = sorted(int(i) for i in g[g[TIMESTAMP] == 1003][ITEM])
        assert (u, tied[-1]) in _held_out(plain, "test") and (u, tied[-2]) in _held_out(plain, "val")
    assert plain.meta["tie_break"] == "item_id" and plain.meta["tie_picked_users"] == 40


def test_random_tie_rule_is_seeded():
    raw = _tied_raw(0)
    kw = dict(task="implicit", split="leave_last_out", tie_break="random", eval_negatives=0)
    a, b, c = prep.prepare(raw, seed=1, **kw), prep.prepare(raw, seed=1, **kw), prep.prepare(raw, seed=2, **kw)
    assert _held_out(a, "test") == _held_out(b, "test") and a.meta["content_hash"] == b.meta["content_hash"]
    assert _held_out(a, "test") != _held_out(c, "test")
    assert a.meta["tie_picked_users"] == 40


def test_unknown_tie_rule_is_one_line_error():
    with pytest.raises(RecsysError, match="tie_break='oldest' is not one of random, item_id"):
        prep.prepare(_tied_raw(0), task="implicit", split="leave_last_out", tie_break="oldest")


def test_duplicate_pairs_keep_the_latest_rating_and_are_counted():
    df = pd.DataFrame({USER: ["1", "1", "1", "2", "2", "2", "2"], ITEM: ["a", "a", "b", "a", "b", "c", "d"],
                       RATING: np.array([5, 1, 3, 2, 2, 2, 2], np.float32), TIMESTAMP: [10, 20, 5, 1, 2, 3, 4]})
    d = prep.prepare(parsers.Raw(df), task="implicit", split="random", val_frac=0, test_frac=0,
                     positive_threshold=3, eval_negatives=0)
    assert d.meta["duplicates_dropped"] == 1
    # user 1's latest rating of a is 1 (not a positive): only b remains for user 1
    kept = {(d.users["raw_id"].iloc[u], d.items["raw_id"].iloc[i]) for u, i in zip(d.train[USER], d.train[ITEM])}
    assert kept == {("1", "b")}


@pytest.mark.parametrize("split", ["random", "temporal", "leave_last_out"])
@pytest.mark.parametrize("tie_break", ["random", "item_id"])
def test_no_user_item_pair_is_ever_in_two_splits(split, tie_break):
    rng = np.random.default_rng(3)
    n = 3000
    df = pd.DataFrame({USER: rng.integers(0, 60, n).astype(str), ITEM: rng.integers(0, 80, n).astype(str),
                       RATING: rng.integers(1, 6, n).astype(np.float32), TIMESTAMP: rng.integers(0, 50, n)})
    assert df.duplicated([USER, ITEM]).sum() > 100  # the input does hold conflicting duplicates
    for task in ("rating", "implicit"):
        d = prep.prepare(parsers.Raw(df), task=task, split=split, tie_break=tie_break, positive_threshold=1,
                         eval_negatives=0, seed=4)
        keys = [set(zip(d.split(p)[USER], d.split(p)[ITEM])) for p in ("train", "val", "test")]
        assert sum(len(k) for k in keys) == len(set().union(*keys)) == d.meta["n_interactions"]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_ratings_are_refused_naming_the_row(tmp_path, value):
    (tmp_path / "r.csv").write_text(f"user,item,rating\n1,1,4\n1,2,{value}\n")
    with pytest.raises(RecsysError, match="on data row 2 is not a finite number"):
        parsers.parse_generic_csv(tmp_path / "r.csv")


@pytest.mark.parametrize("row, message", [
    ("1\t2\t1e39\t881250949", "rating '1e39' on data row 3 is not a finite number a rating can hold"),
    ("1\t2\t4\tinf", "timestamp 'inf' on data row 3 is not a whole number of seconds"),
    ("1\t2\t4\t1e30", "timestamp '1e30' on data row 3 is not a whole number of seconds"),
    ("1\t2\t4\t12.5", "timestamp '12.5' on data row 3 is not a whole number of seconds"),
    ("\t2\t4\t881250949", "the user id on data row 3 is blank or missing"),
    ("nan\t2\t4\t881250949", "the user id on data row 3 is blank or missing"),
    ("1\t \t4\t881250949", "the item id on data row 3 is blank or missing"),
])
def test_values_the_schema_cannot_hold_are_refused_at_parse_time_naming_the_row(tmp_path, row, message):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text(f"1\t1\t5\t881250949\n2\t1\t3\t881250950\n{row}\n")
    with pytest.raises(RecsysError, match=message):
        parsers.parse_ml100k(folder)
