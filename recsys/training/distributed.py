"""Multi-process training: what a worker process (rank > 0) needs, handed over in the environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

WORKER_ENV = "RECSYS_DDP_WORKER"


def hand_off(data_dir: Path, model_name: str, model_hp: dict, cfg, resume_from: Path | None,
             val_users: int = 0) -> None:
    """What this node's worker processes train (they inherit the environment when Lightning launches
    them): the same data folder, model and resolved config, so they never talk to MLflow."""
    os.environ[WORKER_ENV] = json.dumps(worker_spec(data_dir, model_name, model_hp, cfg, resume_from, val_users))


def worker_spec(data_dir: Path, model_name: str, model_hp: dict, cfg, resume_from: Path | None,
                val_users: int = 0) -> dict:
    """What a worker process trains (training.fit_worker): plain values."""
    return {"data_dir": str(data_dir), "model": model_name, "hp": model_hp, "cfg": cfg.model_dump(),
            "resume_from": str(resume_from or ""), "val_users": val_users}


def handed_off() -> dict | None:
    spec = os.environ.get(WORKER_ENV)
    return json.loads(spec) if spec else None


def devices(d: str):
    """Lightning's `devices`: a count where one is given, else its own word (auto)."""
    return int(d) if str(d).isdigit() else d
