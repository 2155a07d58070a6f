"""tune: an Optuna sweep over a model's `search:` space, each trial a nested run, trained in-process.

Parameters (docs/reference.md#tune, docs/tuning.md): model, trials (in all, across every worker of the
study), data, task, config, timeout, storage (shared by several `tune` processes: how a sweep goes past
one machine), study, seed, threads, repeats (training seeds per trial), test. The objective is the
task's validation metric; the shipped defaults are a trial; test only with test=true. Logs a nested
run per trial, best_config.yaml (for `train -P config=`), best/val/..., plots; prints a one-line summary.
"""

import tempfile
import time
from pathlib import Path

import optuna

import mlflow

from recsys import config, evaluation, interrupts, search, tracking, training, tuning
from recsys.data import prepare as prep
from recsys.errors import Interrupted, RecsysError
from recsys.schema import TASKS
from steps import ArgParser, flag, given, integer, local_config

p = ArgParser(prog="tune", description=__doc__.splitlines()[0])
for name, default in (("model", "mf"), ("trials", "20"), ("data", "auto"), ("task", "auto"), ("config", "default"),
                      ("timeout", "0"), ("storage", "default"), ("study", "auto"), ("seed", "42"), ("threads", "1"),
                      ("repeats", "1"), ("test", "false"), ("pruner", "median")):
    p.add_argument(f"--{name}", default=default)


def main(argv=None):
    with tracking.step_run("tune") as run, tempfile.TemporaryDirectory(prefix="recsys-tune-") as tmp:
        tmp = Path(tmp)
        a = p.parse_args(argv)
        a.data, a.task, a.config, a.storage, a.study = map(given, (a.data, a.task, a.config, a.storage, a.study))
        trials, timeout, seed = integer("trials", a.trials, 1), integer("timeout", a.timeout), integer("seed", a.seed)
        repeats = integer("repeats", a.repeats, 1)
        if a.pruner not in tuning.PRUNERS:
            raise RecsysError(f"pruner={a.pruner!r} is not one of {', '.join(tuning.PRUNERS)}")
        score_test = flag("test", a.test)
        cfg_path = Path(local_config(a.config, tmp)) if a.config else config.CONFIG_DIR / f"{a.model}.yaml"
        search.check_search(a.model, cfg_path, a.task)  # before any data is fetched or prepared
        storage = tuning.storage_url(a.storage, mlflow.get_tracking_uri())
        mlflow.set_tag("mlflow.runName", f"tune {a.model}")
        data_uri = a.data or tracking.default_data(a.task or "rating")
        data = prep.load(tracking.download(data_uri, "data", tmp / "data"))
        tracking.check_data(data_uri, data.meta["content_hash"])
        task = data.meta["task"]
        space = search.search_space(a.model, cfg_path, task, data.n_items)
        spec = TASKS[task]
        study_name = a.study or (f"{a.model}-{task}-{data.meta['content_hash'][:8]}-{tuning.space_hash(space)}"
                                 + (f"-r{repeats}" if repeats > 1 else ""))
        study = tuning.open_study(storage, study_name, a.model, task, data.meta["content_hash"], seed,
                                  spec.direction, space, repeats, a.pruner)
        # the shipped defaults are one of the trials (the first, in a new study)
        tuning.enqueue_defaults(study, tuning.defaults_in_space(space, *config.load(a.model, cfg_path, task=task, n_items=data.n_items), task))
        tracking.log_params({"model": a.model, "trials": trials, "data_uri": data_uri, "storage": storage,
                             "study": study_name, "seed": seed, "timeout": timeout, "task": task, "repeats": repeats,
                             "pruner": a.pruner})
        tracking.log_context({"step": "tune", "model": a.model, "task": task, "dataset": data.meta.get("name"),
                              "data_uri": data_uri, "study": study_name})
        base, signals = {"threads": a.threads}, interrupts.Sweep()
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout if timeout else None  # the budget's one clock: no trial starts
        # after it, and any trial (every seed of it) still running then is pruned at its next epoch
        objective = signals.trial()(tracking.trial_objective(a.model, cfg_path, space, base, data, study_name, repeats,
                                                             tmp, deadline))
        with signals:  # an interrupted trial is told FAIL; finished trials stay
            ran = tuning.sweep(study, objective, trials, deadline, signals)
        if signals.signum is not None:  # came between trials: the sweep stopped cleanly after one
            raise Interrupted(signals.signum)
        seconds = time.perf_counter() - t0
        waiting = tuning.settle(study, trials)  # trials other workers are finishing: one summary for all
        done = tuning.finished(study)
        complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise RecsysError(f"study {study_name!r} has no complete trial yet; run more trials")
        best = study.best_trial
        (tmp / "best_config.yaml").write_text(tuning.best_config(a.model, cfg_path, best.params, task))
        mlflow.log_artifact(tmp / "best_config.yaml")
        metrics = {}
        if score_test:  # only when asked: the best configuration, retrained once, on test
            hp, cfg = config.load(a.model, tmp / "best_config.yaml", base, task=task, n_items=data.n_items)
            result = training.fit(data, a.model, hp, cfg, None, tmp / "best")
            metrics = {f"best/{k}": v for k, v in evaluation.evaluate(result.module, data, "test", [10], "both").metrics.items()}
        tracking.log_sweep(study, best, metrics, spec, ran, waiting, seconds, a.model, run.info.run_id, tmp)
    return run.info.run_id


if __name__ == "__main__":
    main()
