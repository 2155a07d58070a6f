"""The served recommender: every request answered sensibly, in-process and over real HTTP."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from recsys.errors import RecsysError
from steps import prepare as prepare_step
from steps import train as train_step
from support import free_port, module_store, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory, ml100k_dir, empty_store):
    """mf trained for 1 epoch on tiny rating data; its pyfunc loaded in-process."""
    with module_store(tmp_path_factory, empty_store, "srv") as db:
        data = prepare_step.main(["--dataset", str(ml100k_dir)])
        train = train_step.main(["--data", f"runs:/{data}/data", "--epochs", "1", "--min_epochs", "0"])
        model = mlflow.pyfunc.load_model(f"runs:/{train}/model")
        yield {"db": db, "train": train, "model": model, "uri": f"runs:/{train}/model"}


def _seen(model, user):
    b = model.unwrap_python_model().bundle
    u = b.user_index.get_loc(str(user))
    seen = b.known.items
    return set(b.item_raw[seen.indices[seen.indptr[u]:seen.indptr[u + 1]]])


def test_top_k_is_unseen_ranked_and_described(served):
    m = served["model"]
    out = m.predict(pd.DataFrame({"user": ["1", "2"]}), params={"k": 5})
    assert list(out["rank"]) == [1, 2, 3, 4, 5] * 2
    assert {"user", "rank", "item", "score", "title", "year", "genres", "fallback"} <= set(out.columns)
    assert out["title"].notna().all() and (out["fallback"] == "").all()
    for user, g in out.groupby("user"):
        assert not set(g["item"]) & _seen(m, user)
        assert list(g["score"]) == sorted(g["score"], reverse=True)


def test_integer_ids_mean_the_same_users(served):
    m = served["model"]
    a = m.predict(pd.DataFrame({"user": ["3"]}), params={"k": 4})
    b = m.predict(pd.DataFrame({"user": [3]}), params={"k": 4})
    assert list(a["item"]) == list(b["item"])


def test_k_above_what_is_left_returns_all_that_is_left(served):
    m = served["model"]
    out = m.predict(pd.DataFrame({"user": ["1"]}), params={"k": 100000})
    n_items = len(m.unwrap_python_model().bundle.item_raw)
    assert len(out) == n_items - len(_seen(m, "1")) and out["item"].is_unique


def test_unknown_user_gets_popularity_flagged_and_unknown_item_a_fallback(served):
    m = served["model"]
    out = m.predict(pd.DataFrame({"user": ["no-such-user"]}), params={"k": 3})
    assert len(out) == 3 and (out["fallback"] == "popularity").all()
    pairs = m.predict(pd.DataFrame({"user": ["1", "no-such-user", "1"], "item": ["1", "1", "no-such-item"]}))
    assert list(pairs["fallback"]) == ["", "item_mean", "global_mean"]
    assert pairs["score"].between(0.5, 5.5).all()


@pytest.mark.parametrize("frame, params, message", [
    ({"user": ["1"]}, {"k": 0}, "k=0 must be a positive integer"),
    ({"user": ["1"]}, {"k": -1}, "k=-1 must be a positive integer"),
    ({"item": ["1"]}, {"k": 5}, "no `user`"),
    ({"user": [None, "1"]}, {"k": 5}, "`user` is null in row 0"),
])
def test_bad_requests_are_one_line_invalid_parameter_errors(served, frame, params, message):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as e:
        served["model"].predict(pd.DataFrame(frame), params=params)
    assert message in e.value.message and "\n" not in e.value.message
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize("body, message", [
    ({"user": [[1, 2]]}, "`user` in row 0 is a list, not an id"),
    ({"user": [{"a": 1}]}, "`user` in row 0 is a dict, not an id"),
    ({"user": [1.5]}, "`user` in row 0 is 1.5, not an id"),
    ({"user": [True]}, "`user` in row 0 is a bool, not an id"),
])
def test_nested_or_odd_values_are_not_taken_as_ids(served, body, message):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=message):
        served["model"].predict(pd.DataFrame(body), params={"k": 3})


def test_inputs_in_every_shape_mlflow_hands_over_are_rows_or_refused(served):
    from mlflow.pyfunc.scoring_server import parse_tf_serving_input

    bundle = served["model"].unwrap_python_model().bundle
    expected = bundle.predict(pd.DataFrame({"user": ["1", "2"]}), 3)
    for body in ({"inputs": [{"user": 1}, {"user": 2}]}, {"inputs": {"user": [1, 2]}}, {"instances": [{"user": "1"}, {"user": "2"}]}):
        got = bundle.predict(parse_tf_serving_input(body), 3)
        assert list(got["item"]) == list(expected["item"])
    for body in ({"inputs": {"user": {"a": 1}}}, {"inputs": {"user": 1}}):
        with pytest.raises(RecsysError, match="is not a list of ids"):
            bundle.predict(parse_tf_serving_input(body), 3)
    with pytest.raises(RecsysError, match="is a mapping, not rows"):
        bundle.predict(pd.DataFrame({"user": {"a": 1}}), 3)


def test_requests_are_capped_in_rows_and_in_answer_size(served):
    from recsys import serving

    bundle = served["model"].unwrap_python_model().bundle
    with pytest.raises(RecsysError, match=f"at most {serving.MAX_ROWS:,} are answered at once"):
        bundle.predict(pd.DataFrame({"user": ["1"] * (serving.MAX_ROWS + 1)}), 1)
    users = ["1"] * serving.MAX_ROWS
    assert len(bundle.predict(pd.DataFrame({"user": users[:100]}), 10)) == 1000
    n_items = len(bundle.item_raw)  # 10,000 users x every item is more than an answer may hold
    with pytest.raises(RecsysError, match="would return more than"):
        bundle.predict(pd.DataFrame({"user": users}), n_items)


def test_missing_years_and_titles_are_null_never_nan(served):
    bundle = served["model"].unwrap_python_model().bundle
    out = bundle.predict(pd.DataFrame({"user": ["1"], "item": ["no-such-item"]}))
    assert out["year"].iloc[0] is None and out["title"].iloc[0] is None
    json.dumps(out.to_dict(orient="records"), allow_nan=False)  # strict JSON: no NaN anywhere


def test_a_bad_requests_line_survives_the_scoring_servers_rewrite():
    from recsys.tracking.pyfunc import RequestError

    e = RequestError("k=0 must be a positive integer", error_code=1001)
    e.message = f"Failed to predict data '  user\n0    1'. \nError: {e.message}"  # what MLflow's server does
    assert e.message == "k=0 must be a positive integer" and json.loads(e.serialize_as_json())["message"] == e.message


def test_the_served_model_loads_and_answers_without_lightning_from_the_code_it_ships(served, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{served['db']}")
    local = Path(mlflow.artifacts.download_artifacts(served["uri"], dst_path=str(tmp_path)))
    assert not any("lightning" in line.lower() for line in (local / "requirements.txt").read_text().splitlines())
    shipped = local / "code" / "recsys"
    assert (shipped / "scoring.py").is_file() and not (shipped / "training").exists()
    script = ("import sys; sys.modules['pytorch_lightning'] = None; sys.modules['lightning'] = None\n"
              "import mlflow.pyfunc\n"  # recsys is not imported before: it must come from the model's code
              f"m = mlflow.pyfunc.load_model({str(local)!r})\n"
              "print(len(m.predict(__import__('pandas').DataFrame({'user': ['1']}), params={'k': 4})))\n"
              "import recsys; print(recsys.__file__)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[-2] == "4" and str(local) in lines[-1], out.stdout


def test_a_k_that_is_not_a_positive_integer_gets_the_same_line_in_every_request_shape(served):
    from mlflow.exceptions import MlflowException

    for k in (2.5, 0, -3, "abc", True, None, [3], "1e400"):
        for frame in ({"user": ["1"]}, [{"user": "1"}]):
            with pytest.raises(MlflowException) as e:
                served["model"].unwrap_python_model().predict(None, frame if isinstance(frame, list)
                                                              else pd.DataFrame(frame), {"k": k})
            assert e.value.message.startswith(f"k={k!r} must be a positive integer"), e.value.message


def test_the_model_holds_only_what_serving_needs(served, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{served['db']}")
    local = Path(mlflow.artifacts.download_artifacts(served["uri"], dst_path=str(tmp_path)))
    files = {p.name for p in (local / "artifacts" / "serving").iterdir()}
    assert files == {"users.parquet", "items.parquet", "tables.npz", "serving.json"}
    assert not list(local.rglob("test.parquet")) and not list(local.rglob("eval_negatives.parquet"))
    info = mlflow.models.get_model_info(served["uri"])
    assert info.signature.params.to_dict()[0]["name"] == "k"
    assert info.saved_input_example_info is not None
    # the UI's model list tells models apart by what they are, while runs:/<id>/model still resolves
    [logged] = mlflow.search_logged_models(filter_string=f"source_run_id = '{served['train']}'", output_format="list")
    assert logged.name == "model" and logged.tags["model"] == "mf" and logged.tags["task"] == "rating"
    assert logged.tags["dataset"] and logged.model_type == f"mf {logged.tags['dataset']} rating"


def _strict(text):
    def refuse(c):
        raise AssertionError(f"{c} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _post(port, body, raw=False, content_type="application/json"):
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, _strict(r.read())
    except urllib.error.HTTPError as e:
        return e.code, _strict(e.read() or b"{}")


@pytest.mark.slow
def test_real_http_answers_every_request_and_keeps_answering(served, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{served['db']}"}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", served["uri"], "-h",
                               "127.0.0.1", "-p", str(port), "--env-manager", "local"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    m = served["model"]
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", 180)

        def split(frame, **params):
            return {"dataframe_split": {"columns": list(frame), "data": [list(r) for r in zip(*frame.values())]},
                    **({"params": params} if params else {})}

        def check_alive():
            status, body = _post(port, split({"user": ["1"]}, k=2))
            assert status == 200 and len(body["predictions"]) == 2

        cases = [({"user": ["1", "2"]}, {"k": 5}), ({"user": ["no-such-user"]}, {"k": 3}), ({"user": [1, 2]}, {"k": 4}),
                 ({"user": ["1"]}, {"k": 100000}), ({"user": ["1", "2"], "item": ["1", "7"]}, {})]
        for frame, params in cases:
            status, body = _post(port, split(frame, **params))
            assert status == 200, body
            expected = m.predict(pd.DataFrame(frame), params=params or None)
            got = pd.DataFrame(body["predictions"])
            assert list(got["item"].astype(str)) == list(expected["item"].astype(str))
            np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-5)
        bad = [(split({"user": ["1"]}, k=0), "k=0 must be a positive integer"),
               (split({"item": ["1"]}, k=3), "no `user`"),
               (b'{"dataframe_split": {"columns": ["user"], "data": [["1"]', None), (b"", None)]
        for body, message in bad:
            status, answer = _post(port, body, raw=isinstance(body, bytes))
            assert status == 400, answer
            if message:
                assert message in answer["message"] and "Traceback" not in answer["message"]
            check_alive()
        for k in (2.5, 0.0, -1):  # numbers reach the model's own rule: one line, the same words as in-process
            status, answer = _post(port, split({"user": ["1"]}, k=k))
            assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
            assert answer["message"].startswith("k=") and "\n" not in answer["message"], answer
            check_alive()
        for k in ("abc", True):  # MLflow's own check of the params schema, as docs/serving.md quotes it
            status, answer = _post(port, split({"user": ["1"]}, k=k))
            assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
            assert "Failed to validate type and shape for 'k': double" in answer["message"], answer
            check_alive()
        users = [str(u) for u in range(1, 121)] * 84  # a 10,080-row batch
        status, body = _post(port, split({"user": users[:10_000]}, k=10))
        assert status == 200 and len(body["predictions"]) == 100_000
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.mark.slow
def test_champion_moves_only_on_a_significant_paired_gain_on_validation(ml100k_dir, tmp_path):
    from recsys import evaluation, paired, tracking
    from recsys.data import prepare as prep
    from steps import evaluate as evaluate_step

    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    weak = train_step.main(["--data", f"runs:/{data}/data", "--model", "global_mean", "--register_as", "rec"])
    strong = train_step.main(["--data", f"runs:/{data}/data", "--model", "mf", "--epochs", "8", "--min_epochs", "8",
                              "--register_as", "rec"])
    client = mlflow.MlflowClient()
    first = evaluate_step.main(["--model-uri", f"runs:/{weak}/model"])
    assert client.get_model_version_by_alias("rec", "champion").version in (1, "1")
    assert mlflow.get_run(first).data.tags["registry.decision"] == "promoted: first champion"
    second = evaluate_step.main(["--model-uri", "models:/rec/2"])
    tags = mlflow.get_run(second).data.tags
    # decided on validation: the test metric of this very run plays no part
    assert tags["registry.metric_key"] == "val/rmse"
    cand, champ = float(tags["registry.candidate_metric"]), float(tags["registry.champion_metric"])
    assert cand != pytest.approx(mlflow.get_run(second).data.metrics["test/rmse"], abs=1e-6)
    # the evidence is the report's paired test on the validation rows, recomputed here
    loaded = prep.load(tracking.download(f"runs:/{data}/data", "data", tmp_path / "data"))
    ev = {v: evaluation.evaluate(tracking.load_bundle(f"models:/rec/{v}", tmp_path / v).module, loaded, "val", [10],
                                 "both") for v in ("1", "2")}
    test = paired.paired_test(ev["2"].per_user, ev["1"].per_user, "rating")
    assert float(tags["registry.paired_delta"]) == pytest.approx(test["delta"], abs=1e-6)
    assert float(tags["registry.paired_se"]) == pytest.approx(test["se"], abs=1e-6)
    assert cand == pytest.approx(ev["2"].metrics["val/rmse"], abs=1e-6) and champ == pytest.approx(ev["1"].metrics["val/rmse"], abs=1e-6)
    assert test["better"] and tags["registry.decision"].startswith("promoted over version 1 (paired ΔMSE -")
    assert client.get_model_version_by_alias("rec", "champion").version in ("2", 2)
    assert client.get_model_version("rec", "2").tags["promotion.decision"] == tags["registry.decision"]
    # the weaker one again: compared with the champion on the same rows, it stays out
    third = evaluate_step.main(["--model-uri", "models:/rec/1"])
    assert mlflow.get_run(third).data.tags["registry.decision"].startswith("kept version 2: not significantly better")
    # a retrain of the champion that differs only by its seed is within noise: the champion stays
    twin = train_step.main(["--data", f"runs:/{data}/data", "--model", "mf", "--epochs", "8", "--min_epochs", "8",
                            "--seed", "43", "--register_as", "rec"])
    fourth = evaluate_step.main(["--model-uri", f"runs:/{twin}/model"])
    assert mlflow.get_run(fourth).data.tags["registry.decision"].startswith("kept version 2: not significantly better")
    assert client.get_model_version_by_alias("rec", "champion").version in ("2", 2)
    # a blend of the champion and a twin is judged by its out-of-fold validation, not by the rows its
    # weights were fitted to: its in-sample RMSE is a training score, and the registry never reads it
    from steps import blend as blend_step

    bl = blend_step.main(["--runs", f"{strong},{twin}", "--register-as", "rec"])
    fitted = mlflow.get_run(bl).data.metrics
    assert fitted["best_val_rmse"] >= fitted["insample_val_rmse"] - 1e-12
    fifth = evaluate_step.main(["--model-uri", f"runs:/{bl}/model"])
    tags = mlflow.get_run(fifth).data.tags
    assert float(tags["registry.candidate_metric"]) == pytest.approx(fitted["best_val_rmse"], abs=1e-6)
    assert float(tags["registry.candidate_metric"]) != pytest.approx(fitted["insample_val_rmse"], abs=1e-9)
    assert tags["registry.decision"].startswith("kept version 2: not significantly better")
    # the alias works wherever a model URI is accepted
    evaluate_step.main(["--model-uri", "models:/rec@champion"])
    assert mlflow.get_run(strong).info.status == "FINISHED"


@pytest.mark.slow
def test_a_blend_whose_in_sample_validation_beats_the_champion_but_out_of_fold_does_not_is_not_promoted(
        ml100k_dir, tmp_path):
    """The blend's weights are fitted on validation, so its in-sample score there is a training score.
    Here its out-of-fold table is made to hold no gain (the champion's own per-user errors) while its
    in-sample validation beats the champion by far: a registry that read the in-sample figure would
    promote it."""
    from recsys import blend, evaluation, paired, tracking
    from recsys.data import prepare as prep
    from steps import blend as blend_step
    from steps import evaluate as evaluate_step

    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    weak = train_step.main(["--data", f"runs:/{data}/data", "--model", "global_mean", "--register_as", "oof"])
    strong = train_step.main(["--data", f"runs:/{data}/data", "--model", "mf", "--epochs", "4", "--min_epochs", "4"])
    evaluate_step.main(["--model-uri", f"runs:/{weak}/model"])  # version 1, the first champion
    bl = blend_step.main(["--runs", f"{strong},{weak}", "--register-as", "oof"])  # version 2
    loaded = prep.load(tracking.download(f"runs:/{data}/data", "data", tmp_path / "data"))
    champ = evaluation.evaluate(tracking.load_bundle("models:/oof/1", tmp_path / "1").module, loaded, "val", [10], "both")
    inside = evaluation.evaluate(tracking.load_bundle("models:/oof/2", tmp_path / "2").module, loaded, "val", [10], "both")
    assert paired.paired_test(inside.per_user, champ.per_user, "rating")["better"]  # in sample: far better
    (tmp_path / "oof").mkdir()
    champ.per_user.to_parquet(tmp_path / "oof" / blend.OOF_FILE)  # out of fold: no better than the champion
    mlflow.MlflowClient().log_artifact(bl, str(tmp_path / "oof" / blend.OOF_FILE))
    run = evaluate_step.main(["--model-uri", "models:/oof/2"])
    tags = mlflow.get_run(run).data.tags
    assert tags["registry.decision"].startswith("kept version 1: not significantly better"), tags["registry.decision"]
    assert float(tags["registry.candidate_metric"]) == pytest.approx(champ.metrics["val/rmse"], abs=1e-6)
    assert mlflow.MlflowClient().get_model_version_by_alias("oof", "champion").version in ("1", 1)


def test_recommend_writes_top_k_for_every_user_or_the_listed_ones(served, tmp_path, monkeypatch, capsys):
    from steps import recommend as recommend_step

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{served['db']}")
    mlflow.set_tracking_uri(f"sqlite:///{served['db']}")
    run = recommend_step.main(["--model-uri", served["uri"], "--k", "5"])
    recs = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run, artifact_path="recommendations.parquet",
                                                               dst_path=str(tmp_path)))
    n_users = len(served["model"].unwrap_python_model().bundle.user_index)
    assert len(recs) == 5 * n_users and recs.groupby("user").size().eq(5).all()
    expected = served["model"].predict(pd.DataFrame({"user": ["7"]}), params={"k": 5})
    assert list(recs[recs["user"] == "7"]["item"]) == list(expected["item"])  # the batch equals the served model
    order = list(recs["user"].unique())  # every user in the order a person counts ids: 1, 2, ..., 10, not 1, 10, 100
    assert order == sorted(order, key=int) and order[:3] == ["1", "2", "3"]
    shown = capsys.readouterr().out.split("user 1:")[1].split("user 2")[0]
    assert shown.count(". ") == 5  # all of k=5 shown
    recommend_step.main(["--model-uri", served["uri"], "--k", "12"])
    shown = capsys.readouterr().out
    assert "user 1 (the first 10 of 12):" in shown and " 10. " in shown and " 11. " not in shown
    (tmp_path / "users.txt").write_text("1\n2\nnobody\n")
    run = recommend_step.main(["--model-uri", served["uri"], "--k", "3", "--users", str(tmp_path / "users.txt")])
    csv = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run, artifact_path="recommendations.csv",
                                                          dst_path=str(tmp_path / "b")), dtype={"user": str})
    assert list(csv["user"].unique()) == ["1", "2", "nobody"] and (csv[csv["user"] == "nobody"]["fallback"] == "popularity").all()
    out = capsys.readouterr().out  # the first users' items are shown with their titles, not only a URI
    first = csv[csv["user"] == "1"].iloc[0]
    assert "user 1:" in out and f"1. {first['title']}" in out and "user nobody (popularity fallback):" in out


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_recommend_refuses_a_users_file_with_a_blank_or_null_user_as_the_served_model_does(served, tmp_path,
                                                                                            monkeypatch, capsys, kind):
    from steps import recommend as recommend_step

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{served['db']}")
    mlflow.set_tracking_uri(f"sqlite:///{served['db']}")
    path = tmp_path / f"users.{kind}"
    if kind == "csv":
        path.write_text("user,note\n1,a\n,b\n2,c\n")  # row 1: a blank cell
    else:
        pd.DataFrame({"user": ["1", None, "2"]}).to_parquet(path)
    row = 1
    with pytest.raises(SystemExit) as e:
        recommend_step.main(["--model-uri", served["uri"], "--k", "3", "--users", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and [x for x in err.splitlines() if x.startswith("error:")] == [
        f"error: `user` is null in row {row}; every row needs a user id"], err
    with pytest.raises(mlflow.exceptions.MlflowException, match=f"`user` is null in row {row}"):  # the server's words
        served["model"].predict(pd.read_csv(path, dtype=str) if kind == "csv" else pd.read_parquet(path))
