"""What a served model answers with: `requests` (a request read and checked), `tables` (what is exported
beside the checkpoint), `bundle` (the answers)."""

from recsys.serving.bundle import Bundle
from recsys.serving.requests import MAX_RESULTS, MAX_ROWS
from recsys.serving.tables import export

__all__ = ["Bundle", "MAX_RESULTS", "MAX_ROWS", "export"]
