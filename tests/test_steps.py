"""The steps end to end in-process on tiny data, against a real (sqlite) tracking store."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from recsys.errors import RecsysError
from steps import evaluate as evaluate_step
from steps import prepare as prepare_step
from steps import train as train_step
from support import module_store


def _last_run():
    return mlflow.search_runs(search_all_experiments=True, order_by=["attributes.start_time DESC"],
                              output_format="list")[0]


def _prepare(path, *args):
    prepare_step.main(["--dataset", str(path), *args])
    return _last_run().info.run_id


def _train(data_run, *args):
    train_step.main(["--data", f"runs:/{data_run}/data", *args])
    return _last_run().info.run_id


def _fails(fn, argv, capsys, match):
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and match in errors[0], err  # one line, no traceback
    assert "Traceback" not in err
    run = _last_run()
    assert run.info.status == "FAILED"
    return run


@pytest.fixture(scope="module")
def rating_chain(tmp_path_factory, ml100k_dir, empty_store):
    with module_store(tmp_path_factory, empty_store, "chain") as db:
        data = _prepare(ml100k_dir)
        train = _train(data, "--model", "mf", "--epochs", "2", "--min_epochs", "0")
        yield {"db": db, "data": data, "train": train}


@pytest.fixture
def chain(rating_chain, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{rating_chain['db']}")
    mlflow.set_tracking_uri(f"sqlite:///{rating_chain['db']}")
    return rating_chain


def test_prepare_logs_data_artifact_input_and_tags(chain):
    run = mlflow.get_run(chain["data"])
    meta = json.loads(open(mlflow.artifacts.download_artifacts(f"runs:/{chain['data']}/data/dataset.json")).read())
    assert meta["n_raw_ratings"] == 2400 and meta["counts"]["train"] == 1920
    assert run.data.tags["content_hash"] == meta["content_hash"]
    assert run.inputs.dataset_inputs[0].dataset.digest == meta["content_hash"][:16]
    assert {"git_commit", "git_dirty", "torch_version", "device"} <= set(run.data.tags)


def test_train_logs_curves_checkpoint_config_and_a_loadable_model(chain):
    rid = chain["train"]
    run = mlflow.get_run(rid)
    assert "val/rmse" in run.data.metrics and "best_val_rmse" in run.data.metrics
    assert not any(k.startswith("test/") for k in run.data.metrics)  # test is left to evaluate unless asked
    assert len(mlflow.MlflowClient().get_metric_history(rid, "train/loss")) == 2
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(rid)}
    assert {"checkpoint", "plots", "config.yaml"} <= names
    assert run.data.params["training.epochs"] == "2"
    model = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    top = model.predict(pd.DataFrame({"user": ["1", "2"]}), params={"k": 5})
    assert len(top) == 10 and set(top.columns) == {"user", "rank", "item", "score", "title", "year", "genres", "fallback"}
    pairs = model.predict(pd.DataFrame({"user": ["1"], "item": ["1"]}))
    assert 0.5 <= pairs["score"].iloc[0] <= 5.5


def test_evaluating_twice_gives_two_linked_runs_with_identical_metrics(chain):
    argv = ["--model-uri", f"runs:/{chain['train']}/model"]
    evaluate_step.main(argv)
    first = _last_run()
    evaluate_step.main(argv)
    second = _last_run()
    assert first.info.run_id != second.info.run_id
    assert first.data.tags["train_run_id"] == chain["train"]
    scores = [{k: v for k, v in r.data.metrics.items() if not k.endswith("_seconds") and not k.startswith("system/")}
              for r in (first, second)]
    assert scores[0] == scores[1] and "test/baseline_rmse" in scores[0]
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(first.info.run_id)}
    assert {"metrics.json", "per_user.parquet", "examples.md", "plots"} <= names


def test_train_and_evaluate_runs_carry_mlflow_system_metrics(chain, monkeypatch):
    import mlflow.system_metrics as system

    asked = []
    start = mlflow.start_run
    monkeypatch.setattr(mlflow, "start_run", lambda *a, **kw: asked.append(kw.get("log_system_metrics")) or start(*a, **kw))
    system.set_system_metrics_sampling_interval(0.1)  # MLflow's default samples every 10 s
    try:
        train = _train(chain["data"], "--model", "mf", "--epochs", "60", "--min_epochs", "60")
        evaluate_step.main(["--model-uri", f"runs:/{train}/model"])
        assert asked == [True, True]  # both steps ask MLflow for them
        metrics = mlflow.get_run(train).data.metrics  # and a run of a few seconds has its samples
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics), metrics
    finally:
        system.set_system_metrics_sampling_interval(None)


def test_unknown_model_fails_before_training(chain, capsys):
    _fails(train_step.main, ["--data", f"runs:/{chain['data']}/data", "--model", "svd"], capsys, "unknown model 'svd'")


def test_misspelt_parameter_fails(chain, capsys):
    _fails(train_step.main, ["--data", f"runs:/{chain['data']}/data", "--embeding_dim", "8"], capsys, "embeding_dim")


def test_missing_data_uri_fails(chain, capsys):
    _fails(train_step.main, ["--data", "runs:/0123456789abcdef/data"], capsys, "could not be read")


def test_data_of_the_other_task_fails(chain, capsys):
    _fails(train_step.main, ["--data", f"runs:/{chain['data']}/data", "--task", "implicit"], capsys,
           "holds the rating task")


def test_bad_k_fails_and_ends_the_run(chain, capsys):
    _fails(evaluate_step.main, ["--model-uri", f"runs:/{chain['train']}/model", "--k", "0"], capsys, "k='0'")
    _fails(evaluate_step.main, ["--model-uri", f"runs:/{chain['train']}/model", "--k", "2.5"], capsys, "k='2.5'")


def test_model_uri_that_does_not_exist_fails(chain, capsys):
    _fails(evaluate_step.main, ["--model-uri", "models:/m-doesnotexist"], capsys, "could not be resolved")


def test_model_evaluated_on_other_task_data_fails(chain, ml100k_dir, capsys):
    implicit = _prepare(ml100k_dir, "--task", "implicit", "--split", "leave_last_out", "--eval-negatives", "20")
    _fails(evaluate_step.main, ["--model-uri", f"runs:/{chain['train']}/model", "--data", f"runs:/{implicit}/data"],
           capsys, "trained for the rating task")


def test_model_evaluated_on_another_dataset_fails(chain, tmp_path, capsys):
    from recsys.data import synthetic

    other = synthetic.write_ml100k(tmp_path / "other", 50, 70, 700, seed=3)
    data = _prepare(other)
    _fails(evaluate_step.main, ["--model-uri", f"runs:/{chain['train']}/model", "--data", f"runs:/{data}/data"],
           capsys, "another dataset")


def test_prepare_with_bad_input_fails_and_logs_no_artifact(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\n1,1,x\n")
    run = _fails(prepare_step.main, ["--dataset", str(bad)], capsys, "'x' on data row 1")
    assert mlflow.MlflowClient().list_artifacts(run.info.run_id) == []


def test_implicit_chain_reports_ranking_metrics(ml100k_dir):
    data = _prepare(ml100k_dir, "--task", "implicit", "--split", "leave_last_out", "--eval-negatives", "20",
                    "--positive-threshold", "1")
    train = _train(data, "--model", "ncf", "--epochs", "2", "--min_epochs", "0")
    evaluate_step.main(["--model-uri", f"runs:/{train}/model", "--k", "5,10"])
    m = _last_run().data.metrics
    for key in ("test/ndcg_at_10", "test/hr_at_5", "test/map_at_10", "test/mrr_at_10", "test/sampled_hr_at_10",
                "test/auc", "test/log_loss", "test/coverage_at_10", "test/popularity/novelty_at_10"):
        assert key in m, key
    assert m["test/ndcg_at_10"] <= m["test/hr_at_10"]


@pytest.mark.parametrize("setting, match", [
    (["--accelerator", "gpu"], "accelerator='gpu'"),
    (["--strategy", "nonsense"], "strategy='nonsense'"),
    (["--devices", "abc"], "devices='abc'"),
    (["--seed", "abc"], "seed='abc': input should be a valid integer"),
])
def test_bad_lightning_settings_fail_before_anything_is_logged(chain, capsys, setting, match):
    run = _fails(train_step.main, ["--data", f"runs:/{chain['data']}/data", *setting], capsys, match)
    assert mlflow.MlflowClient().list_artifacts(run.info.run_id) == []  # no config.yaml
    assert not any(k.startswith("training.") for k in run.data.params)
    assert "error" in run.data.tags


def test_evaluating_a_run_that_does_not_exist_is_one_line(chain, capsys):
    run = _fails(evaluate_step.main, ["--model-uri", "runs:/0123456789abcdef0123456789abcdef/model"], capsys,
                 "does not exist")
    assert "error" in run.data.tags


def test_a_bad_argument_is_one_line_and_a_failed_run(chain, capsys):
    run = _fails(prepare_step.main, ["--seed", "abc"], capsys, "seed='abc' must be an integer >= 0")
    assert "error" in run.data.tags


def test_finished_steps_carry_the_completion_tag_and_readable_names(chain):
    for rid, name in ((chain["data"], "prepare ml-100k rating"), (chain["train"], "train mf")):
        run = mlflow.get_run(rid)
        assert run.data.tags.get("recsys.complete") == "true"
        assert run.info.run_name == name


def test_train_and_evaluate_log_the_data_as_input_and_model_metrics(chain):
    evaluate_step.main(["--model-uri", f"runs:/{chain['train']}/model"])
    ev = _last_run()
    assert ev.info.run_name == "evaluate mf test"
    for rid, context in ((chain["train"], "training"), (ev.info.run_id, "evaluation")):
        inputs = mlflow.get_run(rid).inputs.dataset_inputs
        assert [i.tags[0].value for i in inputs] == [context]
    assert "test/n_rows" not in ev.data.metrics and ev.data.tags["count.test/n_rows"] == "240"
    model_id = mlflow.models.get_model_info(f"runs:/{chain['train']}/model").model_id
    logged = mlflow.get_logged_model(model_id)
    assert any(m.key == "test/rmse" and m.run_id == ev.info.run_id for m in logged.metrics)
    assert ev.data.tags["mlflow.note.content"].startswith("mf on ml-100k test")


@pytest.mark.parametrize("step, argv, match", [
    ("evaluate", ["--model-uri", "runs:/0123456789abcdef0123456789abcdef/model", "--eval-users", "-1"],
     "eval_users='-1' must be an integer >= 0"),
    ("prepare", ["--dataset", "synthetic", "--seed", "-3"], "seed='-3' must be an integer >= 0"),
    ("main", ["--models", " , "], "models= names no model"),
    ("main", ["--seed", "-1"], "seed='-1' must be an integer >= 0"),
    ("main", ["--k", "0"], "k='0' must be positive integers"),  # refused before anything trains
    ("main", ["--eval-negatives", "2.5"], "eval_negatives='2.5' must be an integer >= 0"),
    ("train", ["--threads", "1000000"], "threads=1000000 is more than this machine's"),
    ("main", ["--register-as", "bad name/with:x"], "register_as='bad name/with:x' cannot name a registered model"),
    ("train", ["--register_as", "bad name/with:x"], "register_as='bad name/with:x' cannot name a registered model"),
    ("report", ["--experiment", "x", "--output", "a/b"], "output='a/b' must be a file name without folders"),
])
def test_bad_parameters_fail_in_one_line_before_anything_is_logged(chain, capsys, step, argv, match):
    import importlib

    module = importlib.import_module(f"steps.{step}")
    run = _fails(module.main, argv, capsys, match)
    assert not run.data.params and not run.data.metrics


def test_a_user_sample_as_large_as_the_split_is_filed_as_the_full_protocol(ml100k_dir):
    from steps import evaluate as evaluate_step

    data = prepare_step.main(["--dataset", str(ml100k_dir), "--task", "implicit", "--positive-threshold", "1",
                              "--eval-negatives", "20"])
    assert mlflow.get_run(data).data.tags["split"] == "leave_last_out"  # split=auto: the task's own
    train = _train(data, "--model", "popularity")
    tags = {}
    for users in ("100000", "0", "50"):
        evaluate_step.main(["--model-uri", f"runs:/{train}/model", "--eval-users", users, "--protocol", "full"])
        tags[users] = _last_run().data.tags["protocol"]
    assert tags["100000"] == tags["0"] == "leave_last_out/full" and tags["50"] == "leave_last_out/full@50users"


def test_a_loss_the_task_cannot_train_fails_before_anything_is_logged(chain, capsys):
    run = _fails(train_step.main, ["--data", f"runs:/{chain['data']}/data", "--model", "mf", "--loss", "bpr"], capsys,
                 "loss=bpr needs task=implicit data")
    assert not run.data.params and "content_hash" not in run.data.tags


def test_a_diverging_training_fails_the_run_instead_of_finishing(chain, capsys):
    run = _fails(train_step.main, ["--data", f"runs:/{chain['data']}/data", "--model", "mf", "--lr", "1e6",
                                   "--epochs", "2", "--min_epochs", "0"], capsys, "training diverged")
    assert not any(a.path == "model" for a in mlflow.MlflowClient().list_artifacts(run.info.run_id))


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_another_projects_pyfunc_is_refused_as_not_a_recsys_model(chain, capsys):
    from steps import recommend as recommend_step

    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Echo())
    uri = f"runs:/{run.info.run_id}/model"
    _fails(recommend_step.main, ["--model-uri", uri], capsys, "is not a recsys model (its run")
    _fails(evaluate_step.main, ["--model-uri", uri, "--data", f"runs:/{chain['data']}/data"], capsys,
           "is not a recsys model (its run")
    # without data: still the true reason, not advice to pass a data URI the model never had
    _fails(evaluate_step.main, ["--model-uri", uri], capsys, "is not a recsys model (its run")


def test_resume_restores_the_runs_own_config_then_applies_what_is_given(chain, tmp_path):
    custom = tmp_path / "small.yaml"
    custom.write_text("model: {embedding_dim: 8}\ntraining: {batch_size: 32, epochs: 2, min_epochs: 0}\n")
    first = _train(chain["data"], "--model", "mf", "--config", str(custom))
    resumed = train_step.main(["--resume_from", first, "--epochs", "3"])  # one epoch more
    params = mlflow.get_run(resumed).data.params
    assert params["training.batch_size"] == "32" and params["model.embedding_dim"] == "8"  # not the shipped 64, 50
    assert params["training.epochs"] == "3" and mlflow.get_run(resumed).info.status == "FINISHED"


def test_data_rewritten_consistently_is_caught_by_the_hash_its_prepare_run_recorded(chain, tmp_path, capsys):
    from pathlib import Path

    from recsys.data import prepare as prep

    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{chain['data']}/data", dst_path=str(tmp_path)))
    data = prep.load(folder)
    data.meta["rating_min"] = 3.0  # edited, and every hash made to agree with the edit
    data.meta["file_hashes"] = prep.file_hashes(data)
    data.meta["content_hash"] = prep.content_hash(data)
    (folder / "dataset.json").write_text(json.dumps(data.meta))
    with mlflow.start_run() as forged:
        mlflow.log_artifacts(str(folder), "data")
        mlflow.set_tag("content_hash", mlflow.get_run(chain["data"]).data.tags["content_hash"])  # the original's
    _fails(train_step.main, ["--data", f"runs:/{forged.info.run_id}/data", "--epochs", "1"], capsys,
           "but its prepare run recorded")


class _Payload:
    """Unpickling this creates the file it names: proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_logged_model_holds_no_pickle_and_a_payload_planted_in_any_file_never_runs(chain, tmp_path, capsys):
    import pickle

    from mlflow.utils.file_utils import local_file_uri_to_path

    from recsys import tracking

    run = mlflow.get_run(chain["train"])
    [model] = mlflow.search_logged_models(filter_string=f"source_run_id = '{run.info.run_id}'", output_format="list")
    store = Path(local_file_uri_to_path(model.artifact_location))
    files = sorted(f for f in store.rglob("*") if f.is_file())
    assert files and not any(f.suffix == ".pkl" for f in files)  # models-from-code: no python_model.pkl
    assert "served_model.py" in (store / "MLmodel").read_text()
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Payload(str(marker)))
    uri = f"runs:/{run.info.run_id}/model"
    for f in files:
        original = f.read_bytes()
        f.write_bytes(payload)
        try:
            with pytest.raises(RecsysError, match=f"its file {f.relative_to(store)} changed"):
                tracking.load_bundle(uri, tmp_path / f"dl-{f.name}")
        finally:
            f.write_bytes(original)
    (store / "python_model.pkl").write_bytes(payload)  # a pickle added beside the code
    try:
        _fails(evaluate_step.main, ["--model-uri", uri, "--data", f"runs:/{chain['data']}/data"], capsys,
               "its file python_model.pkl was added")
    finally:
        (store / "python_model.pkl").unlink()
    assert not marker.exists()
    assert tracking.load_bundle(uri, tmp_path / "intact") is not None  # restored: it loads again
