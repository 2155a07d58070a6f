"""train: fit one model on a prepared `data/` artifact and log it as a servable pyfunc model.

Parameters: data (runs:/<prepare_run>/data; empty: reuse a complete prepare run of ml-100k for the
task on this commit, or run one as a child), model (default mf), config (default
configs/<model>.yaml; a path, or a URI such as runs:/<tune run>/best_config.yaml), task (rating |
implicit: the task to prepare when data is empty; otherwise a check), resume_from (a train run id:
continue its interrupted training from its last checkpoint with its data, model and resolved config, then
the overrides given now), overrides lr, epochs, batch_size, embedding_dim, weight_decay,
num_negatives, min_epochs, patience, seed, accelerator, devices, strategy; any other --key value
must name a field of the model's config; register_as (a registered model name: the model becomes a new
version of it); eval_users (implicit: the per-epoch validation ranking and the final test ranking for a
seeded sample of this many users, where ranking everyone would take hours); test (true: also score the
trained model on test, test/...; by default test is left to `evaluate`: nothing here decides on it).
Logs: params (the resolved config as model.*, training.*, runtime.*), config.yaml, per-epoch train/loss, val/loss, val/rmse or
val/ndcg_at_10, best_val_..., checkpoint/best.ckpt and last.ckpt,
plots/*.png, the `model` (pyfunc; its URI is printed and tagged model_uri), the data as an input,
tags for data, git, versions and device; `recsys.complete` last. Interrupted (SIGINT/SIGTERM): the
run ends KILLED with checkpoint/last.ckpt logged.
"""

import sys
import tempfile
from pathlib import Path

import mlflow

from recsys import config, evaluation, interrupts, plots, scoring, serving, tracking, training
from recsys.data import prepare as prep
from recsys.errors import Interrupted, RecsysError
from recsys.models import model_class
from recsys.schema import TASKS
from recsys.training import losses
from steps import ArgParser, flag, local_config

OVERRIDES = ["lr", "epochs", "batch_size", "embedding_dim", "weight_decay", "num_negatives", "min_epochs",
             "patience", "seed", "accelerator", "devices", "strategy", "num_nodes"]
p = ArgParser(prog="train", description=__doc__.splitlines()[0])
p.add_argument("--data", default="")
p.add_argument("--model", default="auto")
p.add_argument("--config", default="")
p.add_argument("--task", default="")
p.add_argument("--resume_from", default="")
p.add_argument("--register_as", default="")
p.add_argument("--eval_users", default="0")
p.add_argument("--test", default="false")
for name in OVERRIDES:
    p.add_argument(f"--{name}", default="")


def extra_overrides(rest: list[str]) -> dict:
    if len(rest) % 2 or any(not k.startswith("--") for k in rest[::2]):
        raise RecsysError(f"could not read parameters {rest}; pass them as -P key=value")
    return {k[2:].replace("-", "_"): v for k, v in zip(rest[::2], rest[1::2])}


def given_overrides(a, rest: list[str]) -> dict:
    """The config overrides given on the command line: named ones and any other --key value."""
    return {**{k: getattr(a, k) for k in OVERRIDES if getattr(a, k) != ""}, **extra_overrides(rest)}


def worker(argv=None) -> None:
    """A process a multi-process strategy started besides rank 0: it trains its shard and nothing else.
    On rank 0's node it takes the data folder and resolved config rank 0 handed off; on another node
    (NODE_RANK > 0, started by the user with the same command) it reads them itself, from an explicit
    `data` URI. No run, no params, no artifacts: MLflow hears only from rank 0."""
    from recsys.config import TrainConfig

    interrupts.worker()
    spec = training.handed_off()
    with tempfile.TemporaryDirectory(prefix="recsys-worker-") as tmp:
        if spec is None:
            a, rest = p.parse_known_args(argv)
            if a.data in ("", "auto"):
                raise SystemExit("error: a node with NODE_RANK > 0 needs -P data=runs:/<prepare run>/data "
                                 "(the same as rank 0's)")
            overrides = given_overrides(a, rest)
            data_dir = tracking.download(a.data, "data", Path(tmp) / "in")
            task = prep.load(data_dir).meta["task"]
            cfg_file = None if a.config in ("", "default") else local_config(a.config, tmp)
            hp, cfg = config.load(a.model, cfg_file, overrides, task=task, n_items=prep.load(data_dir).n_items)
            spec = {"data_dir": str(data_dir), "model": a.model, "hp": hp, "cfg": cfg.model_dump(), "resume_from": "",
                    "val_users": int(a.eval_users or 0)}
        training.fit(prep.load(spec["data_dir"]), spec["model"], spec["hp"], TrainConfig.model_validate(spec["cfg"]), None,
                     Path(tmp) / "checkpoints", resume_from=Path(spec["resume_from"]) if spec["resume_from"] else None,
                     val_users=spec.get("val_users", 0))


def main(argv=None):
    if training.worker_rank():
        return worker(argv)
    with tracking.step_run("train") as run, tempfile.TemporaryDirectory(prefix="recsys-train-") as tmp:
        tmp = Path(tmp)
        a, rest = p.parse_known_args(argv)
        # MLproject's defaults for "not given" (an empty string would show as a '' param in the UI)
        a.data, a.model, a.config, a.task, a.resume_from, a.register_as = (
            "" if v in ("auto", "default", "none") else v
            for v in (a.data, a.model, a.config, a.task, a.resume_from, a.register_as))
        if a.register_as:
            tracking.check_name(a.register_as)
        score_test = flag("test", a.test)
        a.config = local_config(a.config, tmp) if a.config else ""
        overrides = given_overrides(a, rest)
        try:
            eval_users = int(a.eval_users)
        except ValueError:
            eval_users = -1
        if eval_users < 0:
            raise RecsysError(f"eval_users={a.eval_users!r} must be an integer >= 0 (0 = rank for every test user)")
        resume = None
        if a.resume_from:
            old = tracking.resumable(a.resume_from, a.model)
            a.data, a.model = old["data"], old["model"]
            if not a.config:  # the interrupted run's own resolved config, then what is given now
                a.config = str(config.resolved_file(tracking.download(f"runs:/{a.resume_from}/config.yaml", "config",
                                                                      tmp / "resumed"), tmp / "resumed.yaml"))
            else:
                overrides = {**old["overrides"], **overrides}
            resume = tracking.download(f"runs:/{a.resume_from}/checkpoint/last.ckpt", "checkpoint", tmp / "resume")
        a.model = a.model or "mf"
        mlflow.set_tag("mlflow.runName", f"train {a.model}")
        config.load(a.model, a.config or None, overrides)  # fail on a bad config before fetching data
        data_uri = a.data or tracking.default_data(a.task or "rating")
        data_dir = tracking.download(data_uri, "data", tmp / "in")
        data = prep.load(data_dir)
        tracking.check_data(data_uri, data.meta["content_hash"])
        task = data.meta["task"]
        if eval_users and task != "implicit":
            raise RecsysError("eval_users samples the users to rank and applies to the implicit task; leave it at 0")
        if a.task and a.task != task:
            raise RecsysError(f"data {data_uri} holds the {task} task, not {a.task}; prepare it with task={a.task}")
        hp, cfg = config.load(a.model, a.config or None, overrides, task=task, n_items=data.n_items)
        if cfg.runtime.threads:  # before anything reads torch's thread count (the torch_threads tag)
            import torch

            torch.set_num_threads(cfg.runtime.threads)
        training.check_trainer(cfg)  # every setting validated before the first param is logged
        if resume is not None:
            training.check_more_epochs(resume, cfg.epochs, a.resume_from)
        losses.resolve(cfg.loss, task, model_class(a.model), data.n_items)
        tracking.log_params({**config.flat(hp, cfg), "model": a.model, "data": data_uri, "data_uri": data_uri, "task": task,
                             **({"resume_from": a.resume_from} if a.resume_from else {}),
                             **({"eval_users": eval_users} if eval_users else {})})
        mlflow.log_dict(config.as_document(hp, cfg), "config.yaml")
        tracking.log_context({"dataset": data.meta.get("name"), "data_uri": data_uri, "task": task, "model": a.model,
                              "content_hash": data.meta["content_hash"], "ids_hash": data.meta["ids_hash"],
                              "step": "train", "seed": cfg.seed, "overrides": str(overrides)})
        tracking.log_data_input(data, data_uri, "training")
        ckpts = tmp / "checkpoints"
        interrupts.resume_point(ckpts / "last.ckpt")  # an interrupt offers resume_from once it is written
        training.hand_off(data_dir, a.model, hp, cfg, resume, eval_users)  # for worker processes, if the strategy starts any
        try:
            result = training.fit(data, a.model, hp, cfg, tracking.lightning_logger(run.info.run_id), ckpts,
                                  progress=sys.stderr.isatty(), resume_from=resume, epoch_lines=not sys.stderr.isatty(),
                                  val_users=eval_users)
        except Interrupted:
            interrupts.ignore()
            if (ckpts / "last.ckpt").exists():  # what `resume_from` continues from
                mlflow.log_artifact(ckpts / "last.ckpt", "checkpoint")
            raise
        if result.best_score != result.best_score or abs(result.best_score) == float("inf"):
            raise RecsysError(f"training diverged: the best {result.monitor} is {result.best_score} (lr={cfg.lr}); "
                              "lower lr or raise the weight decays")
        # test only when asked (eval_users: a seeded sample of users where full ranking would take hours)
        ev = evaluation.evaluate(result.module, data, "test", [10], "both", eval_users) if score_test else None
        mlflow.set_tags({"world_size": result.world_size, "loss": result.loss, "updates": result.updates})
        tracking.log_metrics({**(ev.metrics if ev else {}), "train_seconds": result.seconds, "epochs_run": result.epochs,
                              f"best_{result.monitor.replace('/', '_')}": result.best_score})
        mlflow.log_artifact(result.checkpoint, "checkpoint")
        if (ckpts / "last.ckpt").exists():
            mlflow.log_artifact(ckpts / "last.ckpt", "checkpoint")
        monitor = TASKS[task].key("val")
        history = tracking.epoch_history(run.info.run_id, ["train/loss", "val/loss", monitor])
        mlflow.log_artifact(plots.learning_curve(history, tmp / "learning_curve.png", a.model), "plots")
        if task == "rating":  # predicted vs actual on validation (test only when asked)
            pr = (ev or evaluation.evaluate(result.module, data, "val", [10], "both")).predictions
            mlflow.log_artifact(plots.rating_histogram(pr["actual"].to_numpy(), pr["predicted"].to_numpy(),
                                                         tmp / "predictions_histogram.png", a.model), "plots")
        known = None
        if result.module.model.uses_history:  # the served model answers a known user from all of their history
            from recsys.data import history

            known = history.histories([data.train, data.val, data.test], data.n_users, result.module.model.max_len)
        weights = scoring.export_weights(result.checkpoint, tmp / "model.ckpt", known)
        model_uri = tracking.log_model(weights, serving.export(data, tmp / "serving"), a.register_as,
                                       {"model": a.model, "dataset": data.meta.get("name", ""), "task": task})
        mlflow.set_tags({"model_uri": model_uri})
        key = TASKS[task].key("test")
        scored = f", {key} = {ev.metrics[key]:.4f}" if ev else ""
        mlflow.set_tag("mlflow.note.content", f"{a.model} on {data.meta.get('name')} ({task}, {data.meta['split']}): "
                       f"{result.epochs} epochs, {monitor} = {result.best_score:.4f}{scored}")
        print(f"{a.model} ({task}): {result.epochs} epochs in {result.seconds:.1f}s, {monitor}={result.best_score:.4f}"
              + (f", {key}={ev.metrics[key]:.4f}" if ev else ""))
        print(f"model URI: runs:/{run.info.run_id}/model ({model_uri})")
    return run.info.run_id


if __name__ == "__main__":
    main()
