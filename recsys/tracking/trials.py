"""A tune sweep's runs: each trial a nested run that trains the suggested configuration, and the
sweep's summary on the tune run (steps/tune.py drives them; recsys/tuning holds the study itself)."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow

from recsys.schema import TASKS
from recsys.tracking.runs import child_run, lightning_logger, log_metrics, log_params


def trial_objective(model: str, cfg_path: Path, space: dict, base: dict, data, study_name: str, repeats: int, tmp: Path,
                    deadline: float | None = None):
    """One trial: the suggested configuration trained (over `repeats` seeds) in a nested run; its mean
    validation score is what the study optimises. Past `deadline` (time.monotonic()) it is pruned, whichever
    seed it is training."""
    import optuna

    from recsys import config, tuning  # torch and Lightning: not for the steps that only import tracking

    task = data.meta["task"]
    monitor = TASKS[task].key("val")
    key = f"best_{monitor.replace('/', '_')}"

    def objective(trial):
        overrides = {**base, **tuning.suggest(trial, space)}
        hp, cfg = config.load(model, cfg_path, overrides, task=task, n_items=data.n_items)
        with child_run(f"trial {trial.number}", optuna.TrialPruned) as child:
            log_params({**config.flat(hp, cfg), "trial": trial.number, "study": study_name,
                                 "repeats": repeats})
            mlflow.set_tags({"step": "tune-trial", "model": model, "trial": trial.number,
                             **({"defaults": "true"} if trial.user_attrs.get("defaults") else {})})
            pruning = tuning.Pruning(trial, monitor, cfg.scheduler != "onecycle", deadline)
            scores, seconds = tuning.fit_seeds(
                data, model, hp, cfg, repeats, tmp / f"trial{trial.number}", lightning_logger(child.info.run_id),
                (pruning,), (pruning.deadline_only(),))
            if repeats > 1:
                log_metrics({f"{key}_seed_{cfg.seed + r}": v for r, v in enumerate(scores)})
            score = tuning.mean_and_sd(scores)
            log_metrics({key: score[0], "train_seconds": seconds,
                                  **({f"{key}_sd": score[1]} if repeats > 1 else {})})
        label = " (the shipped defaults)" if trial.user_attrs.get("defaults") else ""
        spread = f" (sd {score[1]:.4f} over {repeats} seeds)" if repeats > 1 else ""
        print(f"trial {trial.number}{label}: {monitor}={score[0]:.4f}{spread} {trial.params}", flush=True)
        return score[0]

    return objective


def log_sweep(study, best, metrics: dict, spec, ran: int, waiting: int, seconds: float, model: str, run_id: str,
               tmp: Path) -> None:
    """The sweep's figures, plots and one line (the run's note and stdout)."""
    import optuna

    from recsys import tuning

    monitor, key = spec.key("val"), spec.key("test")
    done = tuning.finished(study)
    pruned = len(done) - len([t for t in done if t.state == optuna.trial.TrialState.COMPLETE])
    log_metrics({**metrics, f"best/{monitor}": best.value, "trials_finished": len(done),
                          "trials_pruned": pruned, "trials_run_here": ran, "sweep_seconds": seconds})
    for png in tuning.plots(study, tmp):
        mlflow.log_artifact(png, "plots")
    elsewhere = f", {waiting} still running in another worker" if waiting else ""
    line = (f"tune {model} ({spec.name}): {len(done)} trials in the study ({pruned} pruned{elsewhere}), this worker "
            f"{ran} in {seconds:.0f}s; best trial {best.number} {monitor}={best.value:.4f}"
            + (f" -> {key}={metrics['best/' + key]:.4f}" if metrics else "") + f"; config: runs:/{run_id}/best_config.yaml")
    mlflow.set_tag("mlflow.note.content", line)
    print(line, file=sys.stdout)
