"""Helpers shared by the benchmarks: the real ML-100K through the project's own sources."""

import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.data import prepare as prep  # noqa: E402


def ml100k():
    """Raw ML-100K: from the cache, GroupLens, or the pip mirror (see recsys/data/sources.py)."""
    return prep.load_raw("ml-100k")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
