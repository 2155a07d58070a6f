"""prepare: raw MovieLens -> encoded, split data logged as the `data/` artifact.

Parameters: dataset, task, split, val_frac, test_frac, positive_threshold, min_user_ratings,
min_item_ratings, eval_negatives, seed, tie_break (random | item_id: the order of leave_last_out's
timestamp ties); n_users, n_items, n_ratings (dataset=synthetic only).
Artifacts: data/{train,val,test,users,items,eval_negatives}.parquet + data/dataset.json.
Also: mlflow.log_input (digest = content hash), tags `dataset`, `task`, `split`, `content_hash`.
Prints the data URI (runs:/<run_id>/data) for `train`.
"""

import tempfile
import time
from pathlib import Path

import mlflow

from recsys import tracking
from recsys.data import prepare as prep
from steps import ArgParser, integer

p = ArgParser(prog="prepare", description=__doc__.splitlines()[0])
for name, default in prep.DEFAULTS.items():
    kind = {float: float, int: lambda v, n=name: integer(n, v)}.get(type(default), str)
    p.add_argument(f"--{name.replace('_', '-')}", f"--{name}", dest=name, type=kind, default=default)


def main(argv=None):
    with tracking.step_run("prepare") as run:
        a = p.parse_args(argv)
        t0 = time.perf_counter()
        raw = prep.load_raw(a.dataset, a.n_users, a.n_items, a.n_ratings, a.seed)
        data = prep.prepare(raw, task=a.task, split=a.split, val_frac=a.val_frac, test_frac=a.test_frac,
                            positive_threshold=a.positive_threshold, min_user_ratings=a.min_user_ratings,
                            min_item_ratings=a.min_item_ratings, eval_negatives=a.eval_negatives, seed=a.seed,
                            tie_break=a.tie_break)
        name = Path(a.dataset).name if a.dataset not in prep.sources.DATASETS else a.dataset
        mlflow.set_tag("mlflow.runName", f"prepare {name} {a.task}")
        data.meta.update(name=name, version=f"{name}@{data.meta['content_hash'][:12]}")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "data"
            prep.save(data, out)
            mlflow.log_artifacts(out, "data")
        seconds = time.perf_counter() - t0
        tracking.log_params(vars(a))
        tracking.log_context({"dataset": name, "task": a.task, "split": data.meta["split"],
                              "tie_break": a.tie_break, "content_hash": data.meta["content_hash"], "step": "prepare"})
        m = data.meta
        mlflow.log_metrics({"n_users": m["n_users"], "n_items": m["n_items"], "n_interactions": m["n_interactions"],
                            "rating_mean": m["rating_mean"], "rating_std": m["rating_std"],
                            "sparsity": m["sparsity"], "prepare_seconds": seconds})
        ds = mlflow.data.from_pandas(data.train, name=name, digest=m["content_hash"][:16], targets="rating")
        mlflow.log_input(ds, context="training")
        mlflow.set_tag("mlflow.note.content", prep.summary(data, name))
        print(prep.summary(data, name))
        print(f"data URI: runs:/{run.info.run_id}/data")
    return run.info.run_id


if __name__ == "__main__":
    main()
