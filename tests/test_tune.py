"""tune: Optuna sweeps as nested runs, shared storage, one-line errors."""

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from recsys import config, interrupts, search, tuning
from recsys.data import prepare as prep
from steps import prepare as prepare_step
from steps import train as train_step
from steps import tune as tune_step

ROOT = Path(__file__).resolve().parents[1]


def _fails(argv, capsys, match):
    with pytest.raises(SystemExit) as e:
        tune_step.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in err, err


def test_bad_sweeps_are_one_line_errors(ml100k_dir, tmp_path, capsys):
    _fails(["--model", "global_mean", "--trials", "2"], capsys, "has no search: space")
    _fails(["--model", "popularity", "--task", "implicit", "--trials", "2"], capsys, "has no search.implicit: space")
    _fails(["--model", "mf", "--trials", "0"], capsys, "trials='0' must be a positive integer")
    _fails(["--model", "mf", "--storage", "redis://localhost/0"], capsys, "is not a database URL")
    _fails(["--model", "mf", "--pruner", "asha"], capsys, "pruner='asha' is not one of median, hyperband, none")
    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(storage=storage, study_name="shared").set_user_attr("model", "ncf")
    _fails(["--model", "mf", "--data", f"runs:/{data}/data", "--storage", storage, "--study", "shared"], capsys,
           "was created for")
    # the same model, task and data with another search space (Optuna cannot mix them): one line, and the
    # default study name carries the space's fingerprint, so an edited space starts its own study
    space = search.search_space("mf", None, "rating")
    content = prep.load(Path(mlflow.artifacts.download_artifacts(f"runs:/{data}/data", dst_path=str(tmp_path)))).meta["content_hash"]
    tuning.open_study(storage, "edited", "mf", "rating", content, 42, "minimize",
                      {**space, "batch_size": {"type": "categorical", "choices": [32]}})
    _fails(["--model", "mf", "--data", f"runs:/{data}/data", "--storage", storage, "--study", "edited"], capsys,
           "or the same search space")
    assert tuning.space_hash(space) != tuning.space_hash({**space, "batch_size": {"type": "categorical", "choices": [32]}})
    old = optuna.create_study(storage=storage, study_name="old")  # made before spaces were recorded
    trial = old.ask()
    trial.suggest_categorical("batch_size", [32])
    old.tell(trial, 0.9)
    # in a real process: a trial that fails makes Optuna log its traceback on stderr unless silenced
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    done = subprocess.run([sys.executable, "-m", "steps.tune", "--model", "mf", "--data", f"runs:/{data}/data",
                           "--storage", storage, "--study", "old"], cwd=ROOT, env=env, capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(errors) == 1 and "drew batch_size from another search space" in errors[0]


def test_search_space_keys_must_name_fields(tmp_path):
    bad = tmp_path / "mf.yaml"
    bad.write_text((ROOT / "configs" / "mf.yaml").read_text() + "    lrr: {type: float, low: 0.1, high: 1}\n")
    with pytest.raises(Exception, match="search.implicit.lrr is not a field"):
        search.search_space("mf", bad, "implicit")
    assert "lrr" not in search.search_space("mf", bad, "rating")  # the other task's space is its own


def _with_search(tmp_path, model, text):
    base = (ROOT / "configs" / f"{model}.yaml").read_text()
    path = tmp_path / f"{model}.yaml"
    path.write_text(base[:base.index("search:")] + text)
    return path


def test_a_large_catalogue_is_searched_in_its_own_space():
    from recsys.schema import LARGE_CATALOGUE

    small, large = (search.search_space("mf", None, "implicit", n) for n in (LARGE_CATALOGUE, LARGE_CATALOGUE + 1))
    assert "loss" in small and "loss" not in large  # the sampled softmax stays: a full one is hours an epoch
    assert min(large["num_negatives"]["choices"]) >= 128 and large != small
    assert search.search_space("mf", None, "rating", 10**6) == search.search_space("mf", None, "rating")


def test_search_spaces_are_per_task_and_losses_must_fit_the_task(tmp_path):
    from recsys.models import model_class

    for model in config.MODEL_NAMES:  # every shipped space is valid for the tasks it names
        for task in config.TASKS:
            try:
                space = search.search_space(model, None, task)
            except Exception as e:  # closed form: nothing to tune; next-item models: implicit only
                cls = model_class(model)
                nothing = model in ("global_mean", "popularity") or ((cls.uses_history or cls.implicit_only)
                                                                     and task == "rating")
                assert nothing and "has no search" in str(e), e
                continue
            assert ("loss" in space) == (task == "implicit" and not model_class(model).closed_form), (model, task)
    assert search.search_space("mf", None, "implicit")["loss"]["choices"] == ["bce", "bpr", "softmax"]
    flat = _with_search(tmp_path, "mf", "search:\n  loss: {type: categorical, choices: [bce, bpr]}\n")
    assert list(search.search_space("mf", flat, "implicit")) == ["loss"]  # one space for both tasks
    with pytest.raises(Exception, match=r"loss \['bce', 'bpr'\] cannot train task=rating"):
        search.search_space("mf", flat, "rating")
    soft = _with_search(tmp_path, "ncf", "search:\n  implicit:\n    loss: {type: categorical, choices: [softmax]}\n")
    with pytest.raises(Exception, match="ncf does not score the catalogue"):
        search.search_space("ncf", soft, "implicit")
    mixed = _with_search(tmp_path, "mf", "search:\n  rating: {lr: {type: float, low: 0.001, high: 0.1}}\n"
                         "  lr: {type: float, low: 0.001, high: 0.1}\n")
    with pytest.raises(Exception, match="mixed with keys"):
        search.search_space("mf", mixed, "rating")
    odd = _with_search(tmp_path, "mf", "search:\n  batch_size: {type: categorical, choices: [64, 0]}\n")
    with pytest.raises(Exception, match="batch_size=0: input should be greater than 0"):
        search.search_space("mf", odd, "rating")


def test_the_shipped_defaults_are_enqueued_once_clipped_into_the_space(tmp_path):
    from recsys import tuning

    space = search.search_space("mf", None, "implicit")
    hp, cfg = config.load("mf", task="implicit", overrides={"loss": "auto", "weight_decay": 0.0})
    params = tuning.defaults_in_space(space, hp, cfg, "implicit")
    assert params["loss"] == "bce" and params["weight_decay"] == space["weight_decay"]["low"]  # auto; 0 clipped
    assert params["lr"] == cfg.lr and params["embedding_dim"] == hp["embedding_dim"]
    odd = {"batch_size": {"type": "categorical", "choices": [7, 9]}}
    assert tuning.defaults_in_space(odd, hp, cfg, "implicit") is None  # not a choice: nothing to enqueue
    # a next-item model's auto is its recipe (the full softmax where it fits), a choice of its own space:
    # its defaults trial trains exactly what the shipped config trains, never bce in its place
    seq_space = search.search_space("sasrec", None, "implicit")
    seq = tuning.defaults_in_space(seq_space, *config.load("sasrec", task="implicit"), "implicit")
    assert "auto" in seq_space["loss"]["choices"] and seq["loss"] == "auto"
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s")
    assert tuning.enqueue_defaults(study, params) and not tuning.enqueue_defaults(study, params)
    assert len(study.trials) == 1 and study.trials[0].user_attrs["defaults"]
    trial = study.ask()  # the enqueued defaults
    pruning = tuning.Pruning(trial, "val/rmse")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert tuning.enqueue_defaults(study, params)  # a pruned defaults trial does not count: enqueued again
    assert pruning.trial.user_attrs["defaults"]


def test_the_defaults_trial_is_never_pruned(tmp_path):
    from types import SimpleNamespace

    from recsys import tuning

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s",
                                pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    tuning.enqueue_defaults(study, {"lr": 0.01})
    defaults, other = study.ask(), study.ask()
    for trial in (defaults, other):
        trainer = SimpleNamespace(callback_metrics={"val/rmse": 5.0}, sanity_checking=False, current_epoch=0)
        pruning = tuning.Pruning(trial, "val/rmse")
        if trial is defaults:
            pruning.on_validation_end(trainer, None)  # above the threshold, but the defaults run on
        else:
            with pytest.raises(optuna.TrialPruned):
                pruning.on_validation_end(trainer, None)


def test_a_trial_still_running_when_the_budget_ends_is_pruned_whichever_seed_it_trains_defaults_included(tmp_path):
    import time
    from types import SimpleNamespace

    from recsys import tuning

    study = tuning.open_study(f"sqlite:///{tmp_path / 'o.db'}", "s", "mf", "rating", "h", 0, "minimize",
                              pruner="none")  # no rule of its own: only the budget prunes here
    assert isinstance(study.pruner, optuna.pruners.NopPruner)
    tuning.enqueue_defaults(study, {"lr": 0.01})
    defaults, other = study.ask(), study.ask()
    trainer = SimpleNamespace(callback_metrics={"val/rmse": 0.9}, sanity_checking=False, current_epoch=2)
    before, after = time.monotonic() + 60, time.monotonic() - 1
    tuning.Pruning(other, "val/rmse", deadline=before).on_validation_end(trainer, None)  # in budget: runs on
    with pytest.raises(optuna.TrialPruned, match="budget ran out at epoch 3"):
        tuning.Pruning(other, "val/rmse", prunable=False, deadline=after).on_validation_end(trainer, None)
    with pytest.raises(optuna.TrialPruned, match="budget ran out"):  # the reference too: the budget is a promise
        tuning.Pruning(defaults, "val/rmse", deadline=after).on_validation_end(trainer, None)
    with pytest.raises(optuna.TrialPruned, match="budget ran out"):  # a later seed's training, not reported
        tuning.Pruning(other, "val/rmse", deadline=after).deadline_only().on_validation_end(trainer, None)
    hyperband = tuning.open_study(f"sqlite:///{tmp_path / 'o.db'}", "h", "mf", "rating", "h", 0, "minimize",
                                  pruner="hyperband")
    assert isinstance(hyperband.pruner, optuna.pruners.HyperbandPruner)


def test_a_study_without_a_recorded_space_is_still_refused_in_one_line(tmp_path):
    from recsys.errors import RecsysError

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="old")
    first = study.ask()
    first.suggest_categorical("batch_size", [256, 1024])  # an older space, no fingerprint on the study
    study.tell(first, 0.9)
    with pytest.raises(RecsysError, match="drew batch_size from another search space"):
        tuning.suggest(study.ask(), {"batch_size": {"type": "categorical", "choices": [64, 256]}})


def test_one_cycle_trials_are_judged_on_their_finished_curve(tmp_path):
    from types import SimpleNamespace

    from recsys import tuning

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s",
                                pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    constant, one_cycle = study.ask(), study.ask()
    trainer = SimpleNamespace(callback_metrics={"val/rmse": 5.0}, sanity_checking=False, current_epoch=0)
    with pytest.raises(optuna.TrialPruned):
        tuning.Pruning(constant, "val/rmse").on_validation_end(trainer, None)
    tuning.Pruning(one_cycle, "val/rmse", prunable=False).on_validation_end(trainer, None)  # runs on
    study.tell(one_cycle, 0.9)
    kept = study.trials[one_cycle.number]
    assert kept.intermediate_values == {} and kept.state == optuna.trial.TrialState.COMPLETE  # no mid-cycle values


def test_best_config_moves_only_the_swept_task(tmp_path):
    from recsys import tuning

    path = ROOT / "configs" / "mf.yaml"
    implicit = tmp_path / "implicit.yaml"
    implicit.write_text(tuning.best_config("mf", path, {"lr": 0.0042, "loss": "softmax", "embedding_dim": 77},
                                           "implicit"))
    assert config.load("mf", implicit, task="rating") == config.load("mf", path, task="rating")
    hp, cfg = config.load("mf", implicit, task="implicit")
    assert (cfg.lr, cfg.loss, hp["embedding_dim"]) == (0.0042, "softmax", 77)
    rating = tmp_path / "rating.yaml"
    rating.write_text(tuning.best_config("mf", path, {"lr": 0.0042, "embedding_dim": 77}, "rating"))
    assert config.load("mf", rating, task="implicit")[1].lr == config.load("mf", path, task="implicit")[1].lr
    hp, cfg = config.load("mf", rating, task="rating")
    assert (cfg.lr, hp["embedding_dim"]) == (0.0042, 77)


@pytest.mark.slow
def test_a_two_trial_sweep_logs_nested_trials_the_best_config_and_plots(ml100k_dir, tmp_path):
    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    run = tune_step.main(["--model", "mf", "--trials", "2", "--data", f"runs:/{data}/data", "--test", "true"])
    parent = mlflow.get_run(run)
    trials = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string=f"tags.mlflow.parentRunId = '{run}'")
    assert len(trials) == 2 and all(t.data.tags["optuna.state"] in ("COMPLETE", "PRUNED") for t in trials)
    [shipped] = [t for t in trials if t.data.tags.get("defaults") == "true"]  # the defaults are a trial
    hp0, cfg0 = config.load("mf")
    assert shipped.data.params["training.lr"] == str(cfg0.lr) and shipped.data.params["model.embedding_dim"] == str(
        hp0["embedding_dim"]) and shipped.data.tags["trial"] == "0"
    if shipped.data.tags["optuna.state"] == "COMPLETE":  # so the best is never worse than what it replaces
        assert parent.data.metrics["best/val/rmse"] <= shipped.data.metrics["best_val_rmse"]
    assert all(mlflow.MlflowClient().get_metric_history(t.info.run_id, "val/rmse") for t in trials)
    assert "best/test/rmse" in parent.data.metrics and parent.data.metrics["trials_finished"] == 2
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run)} | \
        {a.path for a in mlflow.MlflowClient().list_artifacts(run, "plots")}
    assert {"best_config.yaml", "plots/optimization_history.png"} <= arts
    best = Path(mlflow.artifacts.download_artifacts(run_id=run, artifact_path="best_config.yaml", dst_path=str(tmp_path)))
    hp, cfg = config.load("mf", best)  # train -P config= accepts it
    study_best = yaml.safe_load(best.read_text())
    assert hp["embedding_dim"] == study_best["model"]["embedding_dim"] and cfg.lr == study_best["training"]["lr"]
    # ... and takes it by URI, as it takes data and models
    trained = train_step.main(["--data", f"runs:/{data}/data", "--model", "mf", "--config",
                               f"runs:/{run}/best_config.yaml", "--epochs", "1", "--min_epochs", "0"])
    assert mlflow.get_run(trained).data.params["training.lr"] == str(cfg.lr)


@pytest.mark.slow
def test_two_workers_share_one_study_and_no_trial_is_lost_or_duplicated(ml100k_dir, tmp_path):
    import os

    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    storage = f"sqlite:///{tmp_path / 'shared-optuna.db'}"
    cmd = [sys.executable, "-m", "steps.tune", "--model", "mf", "--trials", "6", "--data", f"runs:/{data}/data",
           "--storage", storage, "--study", "shared"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    workers = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    study = optuna.load_study(study_name="shared", storage=storage)
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 6  # a worker claims a trial before running it: never one more than asked for
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))  # none lost, none twice
    # a trial asked for when 6 were already claimed, or a second copy of the enqueued defaults, never ran
    others = [t for t in study.trials if t not in done]
    assert all(t.state == optuna.trial.TrialState.FAIL and (t.user_attrs.get("surplus") or t.user_attrs.get("duplicate"))
               and not t.params for t in others)
    # both workers seed their sampler with 42, yet draw different points (seeded per trial number), and
    # the shipped defaults are one trial, not one per worker
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)
    assert sum(bool(t.user_attrs.get("defaults")) for t in done) == 1
    # both summaries read the same finished study: same count, same best trial
    summaries = [re.search(r"(\d+) trials in the study .*best trial (\d+)", o[0]).groups() for o in outs]
    assert summaries[0] == summaries[1] == ("6", str(study.best_trial.number)), [o[0][-600:] for o in outs]
    parents = [r.info.run_id for r in mlflow.search_runs(search_all_experiments=True, output_format="list",
                                                         filter_string="tags.step = 'tune'")]
    assert len(parents) == 2
    children = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string="tags.step = 'tune-trial'")
    assert sorted(int(c.data.tags["trial"]) for c in children) == sorted(t.number for t in done)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == set(parents)  # both did share the work


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_ends_the_sweep_killed(ml100k_dir, tmp_path):
    import os
    import signal

    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    proc = subprocess.Popen([sys.executable, "-m", "steps.tune", "--model", "mf", "--trials", "500", "--data",
                             f"runs:/{data}/data", "--storage", storage, "--study", "s"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not proc.stdout.readline().startswith("trial 2:"):  # trials 0 and 1 are then told to the study
        assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT and "interrupted by SIGINT" in err, err[-3000:]
    [run] = mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string="tags.step = 'tune'")
    assert run.info.status == "KILLED"
    study = optuna.load_study(study_name="s", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED) >= 2
    assert optuna.trial.TrialState.RUNNING not in states  # the trial cut short is marked, not left running


def test_mean_and_sd_over_training_seeds():
    assert tuning.mean_and_sd([0.9]) == (0.9, 0.0)
    mean, sd = tuning.mean_and_sd([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and sd == pytest.approx(0.02)  # ddof=1


@pytest.mark.slow
def test_repeats_average_each_trial_over_training_seeds_and_keep_their_own_study(ml100k_dir, tmp_path, capsys):
    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    run = tune_step.main(["--model", "mf", "--trials", "1", "--repeats", "2", "--data", f"runs:/{data}/data",
                          "--storage", storage])
    [trial] = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                 filter_string=f"tags.mlflow.parentRunId = '{run}'")
    m = trial.data.metrics
    seed = config.load("mf")[1].seed
    per_seed = [m[f"best_val_rmse_seed_{s}"] for s in (seed, seed + 1)]
    assert per_seed[0] != per_seed[1]  # two trainings, not one counted twice
    assert m["best_val_rmse"] == pytest.approx(sum(per_seed) / 2) and m["best_val_rmse_sd"] > 0
    assert trial.data.params["repeats"] == "2"
    assert not any(k.startswith("best/test/") for k in mlflow.get_run(run).data.metrics)  # test: only when asked
    [study] = optuna.get_all_study_summaries(storage)
    assert study.study_name.endswith("-r2") and study.best_trial.value == pytest.approx(m["best_val_rmse"])
    # one seed's values cannot join a study of two-seed means
    _fails(["--model", "mf", "--data", f"runs:/{data}/data", "--storage", storage, "--study", study.study_name],
           capsys, "or the same repeats")
    _fails(["--model", "mf", "--repeats", "0"], capsys, "repeats='0' must be a positive integer")


def _asked(studies, n):
    """Trials asked round-robin from `studies` (workers on one storage), each told before the next round."""
    params = []
    for _ in range(n):
        trials = [s.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                         "dim": optuna.distributions.IntDistribution(8, 128)}) for s in studies]
        for s, t in zip(studies, trials):
            s.tell(t, (t.params["lr"] - 0.01) ** 2 + t.params["dim"] / 1e4)
            params.append((t.number, t.params["lr"], t.params["dim"]))
    return params


def test_workers_of_one_study_draw_different_points_and_a_lone_worker_is_reproducible():
    def study(storage, seed=42):
        return optuna.create_study(storage=storage, study_name="s", load_if_exists=True,
                                   sampler=tuning.TrialSeededTPE(seed))

    # a lone worker: the same seed draws the same trials, past TPE's 10 random startup trials
    runs = [_asked([study(optuna.storages.InMemoryStorage())], 14) for _ in range(2)]
    assert runs[0] == runs[1]
    assert _asked([study(optuna.storages.InMemoryStorage(), seed=43)], 14) != runs[0]
    # two workers (each its own sampler, as two processes) with the same seed on one storage: no repeats
    shared = optuna.storages.InMemoryStorage()
    both = _asked([study(shared), study(shared)], 7)
    assert sorted(n for n, _, _ in both) == list(range(14))
    assert len({lr for _, lr, _ in both}) == 14, both
    # a random startup draw depends on the trial's number, not on which process drew it
    assert sorted(both)[:10] == runs[0][:10]


def test_a_worker_claims_a_trial_before_running_it_so_a_study_never_runs_more_than_asked(tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = tuning.open_study(storage, "s", "mf", "rating", "h", 42, "minimize")
    space = {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}
    ran = []

    def objective(trial):
        ran.append(trial.number)
        return tuning.suggest(trial, space)["lr"]

    # another worker's trial is running while this one's finished: with n=2 nothing more is to be run
    study.tell(study.ask(), 0.5)
    elsewhere = study.ask()
    assert tuning.sweep(study, objective, 2, None, interrupts.Sweep()) == 0 and ran == []
    # the race itself: this worker asks at the moment the study is one short, just after another did
    other = study.ask()  # trial 2, claimed by the other worker (trial 1 is still running)
    study.tell(elsewhere, state=optuna.trial.TrialState.FAIL)  # ... which then fails: one slot is free again
    assert tuning.sweep(study, objective, 2, None, interrupts.Sweep()) == 0  # trial 2 holds it
    study.tell(other, 0.4)
    assert tuning.sweep(study, objective, 3, None, interrupts.Sweep()) == 1 and ran == [3]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    # two workers enqueue the shipped defaults at the same moment: they run once
    for _ in range(2):
        study.enqueue_trial({"lr": 0.01}, user_attrs={"defaults": True})
    assert tuning.sweep(study, objective, 5, None, interrupts.Sweep()) == 2 and ran[-2:] == [4, 6]
    dup = study.trials[5]
    assert dup.user_attrs.get("duplicate") and dup.state.name == "FAIL" and not dup.params
    assert sum(t.params == {"lr": 0.01} and t.state.name == "COMPLETE" for t in study.trials) == 1


def test_a_surplus_trial_is_told_fail_and_never_runs(tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = tuning.open_study(storage, "s", "mf", "rating", "h", 42, "minimize")
    study.tell(study.ask(), 0.5)
    study.ask()  # another worker's trial: 2 claimed

    # the check before `ask` saw one free slot; the other worker took it since
    real_get = study.get_trials
    calls = []

    def stale(*a, **k):
        calls.append(1)
        trials = real_get(*a, **k)
        return trials[:1] if len(calls) == 1 else trials

    study.get_trials = stale
    assert tuning.sweep(study, lambda t: 1.0, 2, None, interrupts.Sweep()) == 0
    last = real_get()[-1]
    assert last.number == 2 and last.state.name == "FAIL" and last.user_attrs.get("surplus")


def test_every_seed_of_a_trial_stops_at_the_budget_not_only_the_first(rating_data, tmp_path):
    import time

    study = tuning.open_study(f"sqlite:///{tmp_path / 'b.db'}", "s", "mf", "rating", "h", 0, "minimize", pruner="none")
    trial = study.ask()
    hp, cfg = config.load("mf", overrides={"epochs": 3, "min_epochs": 3})
    ends = []

    class Seen(tuning.Pruning):
        def on_validation_end(self, trainer, pl_module):
            ends.append(trainer.current_epoch)
            super().on_validation_end(trainer, pl_module)

    pruning = Seen(trial, "val/rmse", deadline=time.monotonic() + 3600)
    later = Seen(trial, "val/rmse", prunable=False, deadline=time.monotonic() - 1)  # the budget ends between seeds
    with pytest.raises(optuna.TrialPruned, match="budget ran out at epoch"):
        tuning.fit_seeds(rating_data, "mf", hp, cfg, 2, tmp_path, callbacks=(pruning,), later=(later,))
    assert ends == [0, 1, 2, 0], ends  # the first seed's three epochs, then the second seed's first: pruned there
