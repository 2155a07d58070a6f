"""recsys: a reproducible recommender pipeline for MovieLens (see README.md)."""

__version__ = "0.1.0"
