"""train: fit one model on a prepared `data/` artifact and log it as a servable pyfunc model.

Parameters: data (runs:/<prepare_run>/data), model (default mf), config (default configs/<model>.yaml),
task (optional: fail if the data holds the other task); overrides lr, epochs, batch_size,
embedding_dim, weight_decay, num_negatives, min_epochs, patience, seed, accelerator, devices,
strategy; any other --key value must name a field of the model's config.
Logs: params (flattened config), config.yaml, per-epoch train/loss, val/loss, val/rmse or
val/ndcg_at_10, test metrics once at the end (test/...), checkpoint/best.ckpt, plots/*.png, the
`model` (pyfunc; its URI is printed and tagged model_uri), tags for data, git, versions and device.
"""

import argparse
import sys
import tempfile
from pathlib import Path


from recsys import config, evaluation, plots, tracking, training
from recsys.data import prepare as prep
from recsys.errors import RecsysError

OVERRIDES = ["lr", "epochs", "batch_size", "embedding_dim", "weight_decay", "num_negatives", "min_epochs",
             "patience", "seed", "accelerator", "devices", "strategy"]
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--data", required=True)
p.add_argument("--model", default="mf")
p.add_argument("--config", default="")
p.add_argument("--task", default="")
for name in OVERRIDES:
    p.add_argument(f"--{name}", default="")


def extra_overrides(rest: list[str]) -> dict:
    if len(rest) % 2 or any(not k.startswith("--") for k in rest[::2]):
        raise RecsysError(f"could not read parameters {rest}; pass them as -P key=value")
    return {k[2:].replace("-", "_"): v for k, v in zip(rest[::2], rest[1::2])}


def main(argv=None):
    a, rest = p.parse_known_args(argv)
    with tracking.step_run(f"train-{a.model}") as run:
        overrides = {**{k: getattr(a, k) for k in OVERRIDES if getattr(a, k) != ""}, **extra_overrides(rest)}
        config.load(a.model, a.config or None, overrides)  # fail on a bad config before fetching data
        data_dir = tracking.download(a.data, "data")
        data = prep.load(data_dir)
        task = data.meta["task"]
        if a.task and a.task != task:
            raise RecsysError(f"data {a.data} holds the {task} task, not {a.task}; prepare it with task={a.task}")
        hp, cfg = config.load(a.model, a.config or None, overrides, task=task)
        resolved = {"model": hp, "training": vars(cfg)}
        tracking.log_params({**config.flat(hp, cfg), "model": a.model, "data": a.data, "task": task})
        tracking.log_json(resolved, "config.yaml")
        tracking.log_context({"dataset": data.meta.get("name"), "data_uri": a.data, "task": task, "model": a.model,
                              "content_hash": data.meta["content_hash"], "ids_hash": data.meta["ids_hash"],
                              "step": "train", "seed": cfg.seed})
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            result = training.fit(data, a.model, hp, cfg, tracking.lightning_logger(run.info.run_id),
                                  tmp / "checkpoints", progress=sys.stderr.isatty())
            ev = evaluation.evaluate(result.module, data, "test", [10], "both")  # test once, at the end
            tracking.log_metrics({**ev.metrics, "train_seconds": result.seconds, "epochs_run": result.epochs,
                                  f"best_{result.monitor.replace('/', '_')}": result.best_score})
            tracking.log_artifact(result.checkpoint, "checkpoint")
            monitor = training.monitor_for(task)[0]
            history = tracking.epoch_history(run.info.run_id, ["train/loss", "val/loss", monitor])
            tracking.log_artifact(plots.learning_curve(history, tmp / "learning_curve.png", a.model), "plots")
            if ev.predictions is not None:
                pr = ev.predictions
                tracking.log_artifact(plots.rating_histogram(pr["actual"].to_numpy(), pr["predicted"].to_numpy(),
                                                             tmp / "predictions_histogram.png", a.model), "plots")
            model_uri = tracking.log_model(result.checkpoint, data_dir)
        tracking.set_tags({"model_uri": model_uri})
        key = "test/rmse" if task == "rating" else "test/ndcg_at_10"
        print(f"{a.model} ({task}): {result.epochs} epochs in {result.seconds:.1f}s, "
              f"{monitor}={result.best_score:.4f}, {key}={ev.metrics[key]:.4f}")
        print(f"model URI: runs:/{run.info.run_id}/model ({model_uri})")
    return run.info.run_id


if __name__ == "__main__":
    main()
