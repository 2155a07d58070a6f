"""Plumbing shared by the tests: module-wide tracking stores, free loopback ports, waiting for servers."""

import contextlib
import io
import shutil
import socket
import time
import urllib.request
import zipfile
from pathlib import Path

import mlflow
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout_s: float = 120) -> None:
    """Poll `url` until it answers (a server started by the test), or fail the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f}s")


@contextlib.contextmanager
def module_store(tmp_path_factory, empty_store, name: str):
    """A tracking store for a module-scoped fixture (the per-test autouse store is reset between tests)."""
    mp = pytest.MonkeyPatch()
    db = tmp_path_factory.mktemp(name) / "mlflow.db"
    shutil.copyfile(empty_store, db)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    try:
        yield db
    finally:
        mp.undo()


def zip_folder(folder: Path) -> bytes:
    """A folder's files as an ml-100k-style archive (`ml-100k/<file>`), in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in Path(folder).iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    return buf.getvalue()
