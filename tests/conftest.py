"""Shared fixtures: tiny MovieLens-format data made in the test, an isolated tracking store and cache."""

import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from recsys.data import parsers, synthetic
from recsys.data import prepare as prep


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An sqlite tracking store with MLflow's tables created once: creating them (alembic migrations)
    costs a second or more, so each test copies this file instead."""
    import mlflow

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    mlflow.search_experiments()
    return db


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, empty_store):
    """Every test gets its own sqlite tracking store and data cache, and never the network."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory) -> Path:
    """u.data / u.user / u.item for 120 users x 150 items, 2,400 ratings."""
    return synthetic.write_ml100k(tmp_path_factory.mktemp("ml") / "ml-100k", 120, 150, 2400, seed=7)


@pytest.fixture(scope="session")
def raw(ml100k_dir) -> parsers.Raw:
    return parsers.parse_ml100k(ml100k_dir)


@pytest.fixture(scope="session")
def rating_data(raw):
    return prep.prepare(raw, task="rating", split="random", seed=1)


@pytest.fixture(scope="session")
def implicit_data(raw):
    return prep.prepare(raw, task="implicit", split="leave_last_out", positive_threshold=1, eval_negatives=20, seed=1)


# Progress a person can read: the suite's files run two at a time (-n 2 --dist loadfile), and a few long
# ones (end to end, the tracking server, signals) can leave the dots silent for minutes. Every half minute
# without a finished test, the controller says which tests are running and for how long.
QUIET_S = 30
_running: dict[str, float] = {}
_last = [time.monotonic()]


def pytest_runtest_logstart(nodeid, location):
    _running[nodeid] = time.monotonic()


def pytest_runtest_logreport(report):
    if report.when == "teardown":
        _running.pop(report.nodeid, None)
        _last[0] = time.monotonic()


def _watch(started: float) -> None:
    while True:
        time.sleep(5)
        now = time.monotonic()
        if now - _last[0] >= QUIET_S and _running:
            doing = ", ".join(f"{n.split('::')[-1]} ({now - t:.0f} s)" for n, t in list(_running.items()))
            sys.__stderr__.write(f"\n[{(now - started) / 60:.1f} min] still running: {doing}\n")
            sys.__stderr__.flush()
            _last[0] = now


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without workers)
        threading.Thread(target=_watch, args=(time.monotonic(),), daemon=True).start()
