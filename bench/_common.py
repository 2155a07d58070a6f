"""Helpers shared by the benchmarks: the real ML-100K through the project's own sources."""

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.data import prepare as prep  # noqa: E402


def ml100k():
    """Raw ML-100K: from the cache, GroupLens, or the pip mirror (see recsys/data/sources.py)."""
    return prep.load_raw("ml-100k")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@contextlib.contextmanager
def served(model_uri: str, cwd, tries: int = 360):
    """`mlflow models serve` of `model_uri` on a free loopback port, up once /ping answers; yields
    (process, port) and stops its process group after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "-h", "127.0.0.1",
                               "-p", str(port), "--env-manager", "local"], cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(tries):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield server, port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
