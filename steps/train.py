"""train: fit one model on a prepared `data/` artifact and log it as a servable pyfunc model.

Parameters (docs/reference.md#train): data (default: a reused or new ml-100k prepare run), model, config
(a path or a URI), task, resume_from (an interrupted train run), register_as, eval_users, test, and any
config field as an override. Logs the resolved config (params and config.yaml), per-epoch curves,
checkpoints, plots and the `model`; `recsys.complete` last. Interrupted: KILLED, checkpoint/last.ckpt logged.
"""

import json
import sys
import tempfile
from pathlib import Path

import mlflow

# torch, Lightning and the trainer (seconds to import) load once the request has been checked: a
# misspelt model or a bad config value is refused without them
from recsys import config, interrupts, tracking
from recsys.errors import Interrupted, RecsysError
from recsys.schema import TASKS
from steps import ArgParser, flag, given, integer, local_config, overrides_given, worker_rank

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


def main(argv=None):
    if worker_rank():  # a process a multi-process strategy started besides rank 0: no run of its own
        from steps.train_worker import worker

        return worker(p, OVERRIDES, argv)
    with tracking.step_run("train") as run, tempfile.TemporaryDirectory(prefix="recsys-train-") as tmp:
        tmp = Path(tmp)
        a, rest = p.parse_known_args(argv)
        a.data, a.model, a.config, a.task, a.resume_from, a.register_as = map(given, (
            a.data, a.model, a.config, a.task, a.resume_from, a.register_as))
        if a.register_as:
            tracking.check_name(a.register_as)
        score_test = flag("test", a.test)
        a.config = local_config(a.config, tmp) if a.config else ""
        overrides = overrides_given(a, OVERRIDES, rest)
        eval_users = integer("eval_users", a.eval_users)
        resume = None
        if a.resume_from:
            a.data, a.model, a.config, overrides, resume = tracking.resume_request(a.resume_from, a.model, a.config,
                                                                                   overrides, tmp, a.data, a.task)
        a.model = a.model or "mf"
        mlflow.set_tag("mlflow.runName", f"train {a.model}")
        config.load(a.model, a.config or None, overrides)  # fail on a bad config before fetching data
        import torch

        from recsys import evaluation, training
        from recsys.data import prepare as prep
        data_uri = a.data or tracking.default_data(a.task or "rating")
        data_dir = tracking.download(data_uri, "data", tmp / "in")
        data = prep.load(data_dir)
        tracking.check_data(data_uri, data.meta["content_hash"])
        task = data.meta["task"]
        if a.task and a.task != task:
            raise RecsysError(f"data {data_uri} holds the {task} task, not {a.task}; prepare it with task={a.task}")
        hp, cfg = config.load(a.model, a.config or None, overrides, task=task, n_items=data.n_items)
        if cfg.runtime.threads:  # before anything reads torch's thread count (the torch_threads tag)
            torch.set_num_threads(cfg.runtime.threads)
        training.check_request(a.model, cfg, task, data.n_items, eval_users, resume, a.resume_from)
        tracking.log_params({**config.flat(hp, cfg), "model": a.model, "data": data_uri, "data_uri": data_uri, "task": task,
                             **({"resume_from": a.resume_from} if a.resume_from else {}),
                             **({"eval_users": eval_users} if eval_users else {})})
        mlflow.log_dict(config.as_document(hp, cfg), "config.yaml")
        tracking.log_context({"dataset": data.meta.get("name"), "data_uri": data_uri, "task": task, "model": a.model,
                              "content_hash": data.meta["content_hash"], "ids_hash": data.meta["ids_hash"],
                              "step": "train", "seed": cfg.seed, "overrides": json.dumps(overrides, sort_keys=True, default=str)})
        tracking.log_data_input(data, data_uri, "training")
        ckpts = tmp / "checkpoints"
        interrupts.resume_point(ckpts / "last.ckpt")  # an interrupt offers resume_from once it is written
        training.hand_off(data_dir, a.model, hp, cfg, resume, eval_users)  # for worker processes, if the strategy starts any
        try:
            result = training.fit(data, a.model, hp, cfg, tracking.lightning_logger(run.info.run_id), ckpts,
                                  progress=sys.stderr.isatty(), resume_from=resume, epoch_lines=not sys.stderr.isatty(),
                                  val_users=eval_users)
        except Interrupted:
            if (ckpts / "last.ckpt").exists():  # what `resume_from` continues from
                mlflow.log_artifact(ckpts / "last.ckpt", "checkpoint")
            raise
        # test only when asked (eval_users: a seeded sample of users where full ranking would take hours)
        ev = evaluation.evaluate(result.module, data, "test", [10], "both", eval_users) if score_test else None
        model_uri = tracking.log_trained(result, data, a.model, cfg.lr, run.info.run_id, tmp, a.register_as, ev)
        key = TASKS[task].key("test")
        print(f"{a.model} ({task}): {result.epochs} epoch{'s' * (result.epochs != 1)} in {result.seconds:.1f}s, {result.monitor}={result.best_score:.4f}"
              + (f", {key}={ev.metrics[key]:.4f}" if ev else ""))
        print(f"model URI: runs:/{run.info.run_id}/model ({model_uri})")
    return run.info.run_id


if __name__ == "__main__":
    main()
