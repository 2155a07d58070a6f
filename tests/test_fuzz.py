"""Bounded fuzzing of every parser: truncations and byte flips (fixed seed). Each case is a valid result
or a one-line RecsysError; never another exception, never a hang."""

import shutil
import time

import numpy as np
import pytest

from recsys.data import parsers
from recsys.errors import RecsysError

CASES = 80  # per format; the whole file runs in a few seconds


def _formats(tmp_path, ml100k_dir):
    out = {}
    d = tmp_path / "ml100k"
    shutil.copytree(ml100k_dir, d)
    out["ml100k"] = (d, "u.data", parsers.parse_ml100k)
    d = tmp_path / "dat"
    d.mkdir()
    (d / "ratings.dat").write_text("".join(f"{u}::{i}::{(u + i) % 5 + 1}::{9780 + u * i}\n"
                                          for u in range(1, 30) for i in range(1, 12)))
    (d / "movies.dat").write_bytes(b"1::Toy Story (1995)::Animation\n2::Caf\xe9 (1999)::Drama\n")
    out["dat"] = (d, "ratings.dat", parsers.parse_dat)
    d = tmp_path / "csv"
    d.mkdir()
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{(u * i) % 5 + 0.5},{100 + u}\n" for u in range(1, 30) for i in range(1, 12)))
    (d / "movies.csv").write_text('movieId,title,genres\n1,"Heat (1995)",Action|Crime\n2,Up (2009),Animation\n')
    out["movielens_csv"] = (d, "ratings.csv", parsers.parse_movielens_csv)
    d = tmp_path / "atomic"
    d.mkdir()
    (d / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{(u + i) % 5 + 1}\t{u * 7}\n" for u in range(1, 30) for i in range(1, 12)))
    out["atomic"] = (d, "x.inter", parsers.parse_atomic)
    d = tmp_path / "generic"
    d.mkdir()
    (d / "r.csv").write_text("user,item,rating\n" + "".join(f"{u},{i},{(u + i) % 5 + 1}\n"
                                                           for u in range(1, 30) for i in range(1, 12)))
    out["generic"] = (d, "r.csv", lambda folder: parsers.parse_generic_csv(folder / "r.csv"))
    return out


def _mutate(data: bytes, rng) -> bytes:
    kind = rng.integers(0, 4)
    b = bytearray(data)
    if kind == 0:  # truncate anywhere
        return bytes(b[: rng.integers(0, len(b))])
    if kind == 1:  # flip bytes
        for pos in rng.integers(0, len(b), rng.integers(1, 20)):
            b[pos] = rng.integers(0, 256)
        return bytes(b)
    if kind == 2:  # delete a span
        i = rng.integers(0, len(b))
        return bytes(b[:i] + b[i + rng.integers(1, 200):])
    i = rng.integers(0, len(b))  # insert separators, quotes, NULs and non-UTF-8
    junk = bytes(rng.choice(list(b'\x00\xff\xfe"\t,:|\n\r\\'), rng.integers(1, 30)))
    return bytes(b[:i] + junk + b[i:])


@pytest.mark.parametrize("fmt", ["ml100k", "dat", "movielens_csv", "atomic", "generic"])
def test_every_mutated_file_parses_or_fails_in_one_line(tmp_path, ml100k_dir, fmt):
    folder, name, parse = _formats(tmp_path, ml100k_dir)[fmt]
    original = (folder / name).read_bytes()
    parse(folder)  # the unmutated file is valid
    rng = np.random.default_rng(12345)
    ok = failed = 0
    t0 = time.perf_counter()
    for _ in range(CASES):
        (folder / name).write_bytes(_mutate(original, rng))
        try:
            raw = parse(folder)
        except RecsysError as e:
            assert "\n" not in str(e) and str(e), repr(e)
            failed += 1
        else:
            inter = raw.interactions
            assert list(inter.columns) == ["user", "item", "rating", "timestamp"]
            assert np.isfinite(inter["rating"].to_numpy()).all()
            ok += 1
    # no parse hangs: a generous bound (about 2 s quiet, under 30 s on two busy cores)
    assert ok + failed == CASES and time.perf_counter() - t0 < 300
