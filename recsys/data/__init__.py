"""Data: sources, parsers, the normalised schema, features, splits and negative sampling."""
