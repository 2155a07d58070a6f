"""The train step in a process a multi-process strategy started besides rank 0 (steps/train.py hands over to
it): it trains its shard and starts no run. Imported only in such a process."""

import tempfile
from pathlib import Path

from recsys import config, interrupts, tracking, training
from recsys.data import prepare as prep
from steps import given, integer, local_config, overrides_given


def worker(p, overrides: list[str], argv=None) -> None:
    """A process a multi-process strategy started besides rank 0: it trains its shard, with no run (MLflow
    hears only from rank 0), from what rank 0 handed off on its node; on another node (NODE_RANK > 0,
    started by the user with the same command) from the explicit `data` URI, read here."""
    interrupts.worker()
    with tempfile.TemporaryDirectory(prefix="recsys-worker-") as tmp:
        spec = training.handed_off()
        if spec is None:
            a, rest = p.parse_known_args(argv)
            if not given(a.data):
                raise SystemExit("error: a node with NODE_RANK > 0 needs -P data=runs:/<prepare run>/data "
                                 "(the same as rank 0's)")
            data_dir = tracking.download(a.data, "data", Path(tmp) / "in")
            data, model = prep.load(data_dir), given(a.model) or "mf"
            hp, cfg = config.load(model, local_config(given(a.config), tmp) or None, overrides_given(a, overrides, rest),
                                  task=data.meta["task"], n_items=data.n_items)
            spec = training.worker_spec(data_dir, model, hp, cfg, None, integer("eval_users", a.eval_users or 0))
        training.fit_worker(spec, Path(tmp) / "checkpoints")
