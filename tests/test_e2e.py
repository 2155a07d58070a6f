"""Real `mlflow run` end to end (slow): main chains the steps, reuses finished work, reproduces from git."""

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _mlflow_run(uri, cwd, env, *params, entry="main", version=None):
    cmd = [sys.executable, "-m", "mlflow", "run", str(uri), "-e", entry, "--env-manager", "local"]
    if version:
        cmd += ["--version", version]
    for p in params:
        cmd += ["-P", p]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return r


@pytest.fixture(scope="module")
def clean_clone(tmp_path_factory):
    """This repo's committed HEAD, cloned: a clean tree (uncommitted edits would block reuse)."""
    src = tmp_path_factory.mktemp("origin") / "recsys"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True)
    # serve fetches of any commit by id, as a hosted git server does
    subprocess.run(["git", "-C", str(src), "config", "uploadpack.allowAnySHA1InWant", "true"], check=True)
    return src


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    e.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", RECSYS_DATA_DIR=str(tmp_path / "cache"))
    return e


def _scores(run):
    """A run's metrics without its timings and the machine's load (system/*: sampled while a run lasts
    long enough), which differ run to run."""
    return {k: v for k, v in run.data.metrics.items() if not k.endswith("_seconds") and not k.startswith("system/")}


def _runs(env, entry):
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    return mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.`mlflow.project.entryPoint` = '{entry}'",
                              order_by=["attributes.start_time ASC"], output_format="list")


def test_main_chains_nested_runs_then_reuses_them_and_force_reproduces_metrics(clean_clone, ml100k_dir, env, tmp_path):
    params = [f"dataset={ml100k_dir}", "models=mf", "epochs=2"]
    first = _mlflow_run(clean_clone, tmp_path, env, *params)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "| mf |" in first.stdout and "ran run" in first.stdout
    assert "| epochs=2 |" in first.stdout  # the leaderboard says the schedule was shortened by hand
    last = first.stdout.strip().splitlines()[-1]  # what the whole run cost, step by step
    assert last.startswith("main: ") and "s wall" in last and "GiB RSS" in last and "train.mf " in last
    peak = float(re.search(r"peaked at ([\d.]+) GiB RSS", last).group(1))
    cpu = float(re.search(r"train\.mf \d+s \((\d+)s CPU\)", last).group(1))
    assert 0.1 < peak < 8 and cpu >= 1  # what the steps themselves used, though forked from another process
    main_run = _runs(env, "main")[0]
    children = [r for r in _runs(env, "train") + _runs(env, "prepare") + _runs(env, "evaluate")]
    assert len(children) == 3 and all(r.data.tags.get("mlflow.parentRunId") == main_run.info.run_id for r in children)
    assert "leaderboard.md" in {a.path for a in mlflow.MlflowClient().list_artifacts(main_run.info.run_id)}

    # a train run on the same data, asked everything main asks and one thing more: never reused by main
    [prep], [train] = _runs(env, "prepare"), _runs(env, "train")
    odd = _mlflow_run(clean_clone, tmp_path, env, f"data=runs:/{prep.info.run_id}/data", "model=mf", "task=rating",
                      "seed=42", "epochs=2", "lr=0.5", entry="train")
    assert odd.returncode == 0, odd.stderr[-3000:]

    second = _mlflow_run(clean_clone, tmp_path, env, *params)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("reused run") == 3 and "ran run" not in second.stdout
    assert f"train.mf: reused run {train.info.run_id}" in second.stdout  # the run main started, not the lr=0.5 one
    assert len(_runs(env, "train")) == 2  # nothing new trained

    forced = _mlflow_run(clean_clone, tmp_path, env, *params, "force=1")
    assert forced.returncode == 0, forced.stderr[-3000:]
    evals = _runs(env, "evaluate")
    assert len(evals) == 2
    assert _scores(evals[0]) == _scores(evals[1])  # same params + seed -> same metrics on CPU


def test_parallel_2_trains_two_models_side_by_side_into_one_leaderboard(clean_clone, ml100k_dir, env, tmp_path):
    r = _mlflow_run(clean_clone, tmp_path, env, f"dataset={ml100k_dir}", "models=popularity,mf", "epochs=3",
                    "parallel=2")
    assert r.returncode == 0, r.stderr[-3000:]
    [main_run] = _runs(env, "main")
    assert main_run.data.tags["parallel"] == "2"
    trains, evals = _runs(env, "train"), _runs(env, "evaluate")
    assert sorted(t.data.tags["model"] for t in trains) == ["mf", "popularity"]
    assert len(evals) == 2 and all(x.info.status == "FINISHED" for x in trains + evals)
    assert all(x.data.tags["mlflow.parentRunId"] == main_run.info.run_id for x in trains + evals)
    first, second = trains
    assert second.info.start_time < first.info.end_time  # the second started before the first ended
    board = mlflow.artifacts.load_text(f"runs:/{main_run.info.run_id}/leaderboard.md")
    for t in trains:
        assert f"| {t.data.tags['model']} |" in board and t.info.run_id in board
    # no `mlflow run` CLI between main and its steps: each step's parent process is main's
    assert "Asynchronously launching" not in r.stderr and r.stderr.count("Running command") == 6
    # each step that imports torch forked from one interpreter that imported it once (env_manager local), and
    # side by side each with its share of the cores, though torch counted them when that interpreter imported it
    assert r.stderr.count("forked from a preloaded interpreter") == 4
    assert {t.data.tags["torch_threads"] for t in trains} == {str(max(1, (os.cpu_count() or 1) // 2))}


def test_main_blend_1_blends_its_models_evaluates_the_blend_and_lists_it(clean_clone, ml100k_dir, env, tmp_path):
    r = _mlflow_run(clean_clone, tmp_path, env, f"dataset={ml100k_dir}", "models=popularity,mf", "epochs=3", "blend=1")
    assert r.returncode == 0, r.stderr[-3000:]
    [main_run], trains = _runs(env, "main"), _runs(env, "train")
    [bl] = _runs(env, "blend")
    assert bl.info.status == "FINISHED" and bl.data.tags["mlflow.parentRunId"] == main_run.info.run_id
    assert sorted(bl.data.tags["blend.members"].split(",")) == sorted(t.info.run_id for t in trains)
    [ev] = [e for e in _runs(env, "evaluate") if e.data.tags["train_run_id"] == bl.info.run_id]
    board = mlflow.artifacts.load_text(f"runs:/{main_run.info.run_id}/leaderboard.md")
    assert "| blend |" in board and bl.info.run_id in board and ev.info.run_id in board
    refused = _mlflow_run(clean_clone, tmp_path, env, f"dataset={ml100k_dir}", "models=mf", "blend=1")
    assert refused.returncode != 0 and "blend=1 needs two or more models" in refused.stderr


def test_main_tests_every_model_and_the_blend_on_one_seeded_sample_of_users(clean_clone, ml100k_dir, env, tmp_path):
    r = _mlflow_run(clean_clone, tmp_path, env, f"dataset={ml100k_dir}", "task=implicit", "models=popularity,itemknn",
                    "blend=1", "eval_users=50", "eval_negatives=20")
    assert r.returncode == 0, r.stderr[-3000:]
    evals = _runs(env, "evaluate")
    assert len(evals) == 3  # two models and their blend, ranked for the same 50 users, the protocol saying so
    assert len({e.data.tags["protocol"] for e in evals}) == 1 and evals[0].data.tags["protocol"].endswith("@50users")
    assert all(e.data.tags["count.test/n_users"] == "50" for e in evals)


def test_a_failing_child_fails_main_with_its_message(clean_clone, env, tmp_path):
    r = _mlflow_run(clean_clone, tmp_path, env, f"dataset={tmp_path / 'missing.csv'}")
    assert r.returncode != 0
    main_run = _runs(env, "main")[0]
    assert main_run.info.status == "FAILED"
    assert "step prepare failed" in main_run.data.tags["error"] and "does not exist" in main_run.data.tags["error"]


def test_git_url_at_a_pinned_commit_reproduces_a_run(clean_clone, ml100k_dir, env, tmp_path):
    from steps import prepare as prepare_step

    commit = subprocess.run(["git", "-C", str(clean_clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    params = [f"data=runs:/{data}/data", "model=mf", "epochs=2", "min_epochs=0"]
    local = _mlflow_run(clean_clone, tmp_path, env, *params, entry="train")
    assert local.returncode == 0, local.stderr[-3000:]
    remote = _mlflow_run(f"file://{clean_clone}", tmp_path, env, *params, entry="train", version=commit)
    assert remote.returncode == 0, remote.stderr[-3000:]
    runs = _runs(env, "train")
    assert len(runs) == 2
    assert _scores(runs[0]) == _scores(runs[1])  # the same commit and parameters: the same metrics on CPU
    assert runs[1].data.tags["git_commit"] == commit and runs[1].data.tags["git_dirty"] == "false"


def test_the_logged_model_serves_top_k_over_http(ml100k_dir, env, tmp_path):
    import json
    import urllib.request

    from steps import prepare as prepare_step
    from steps import train as train_step

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    prepare_step.main(["--dataset", str(ml100k_dir)])
    data = _runs_any(env)[-1].info.run_id
    train_step.main(["--data", f"runs:/{data}/data", "--model", "mf", "--epochs", "1", "--min_epochs", "0"])
    train = _runs_any(env)[-1].info.run_id
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{train}/model",
                               "-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping")
        body = json.dumps({"dataframe_split": {"columns": ["user"], "data": [["1"], ["2"]]}, "params": {"k": 3}})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body.encode(),
                                     {"Content-Type": "application/json"})
        preds = json.loads(urllib.request.urlopen(req, timeout=30).read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [p["rank"] for p in preds] == [1, 2, 3, 1, 2, 3]
    assert all(isinstance(p["item"], str) for p in preds)


def _runs_any(env):
    return mlflow.search_runs(search_all_experiments=True, order_by=["attributes.start_time ASC"], output_format="list")


def test_the_train_command_works_exactly_as_written_in_a_fresh_store(clean_clone, env, tmp_path):
    """`mlflow run . -e train -P model=ncf -P lr=0.018`: no data given, no env manager given (a virtualenv
    from python_env.yaml; MLflow reuses it once built). It prepares ml-100k (the pip mirror) as a child run."""
    cmd = [sys.executable, "-m", "mlflow", "run", ".", "-e", "train", "-P", "model=ncf", "-P", "lr=0.018"]
    r = subprocess.run(cmd, cwd=clean_clone, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    [train] = _runs(env, "train")
    [prep] = _runs(env, "prepare")
    assert train.info.status == "FINISHED" and train.data.tags["recsys.complete"] == "true"
    assert train.data.params["training.lr"] == "0.018" and train.data.params["model"] == "ncf"
    assert train.data.params["data_uri"] == f"runs:/{prep.info.run_id}/data"
    assert prep.data.tags["mlflow.parentRunId"] == train.info.run_id
    assert "" not in train.data.params.values()  # only what was set, resolved values under their own names
    # a second standalone train reuses that prepare run (same params, same commit)
    again = subprocess.run(cmd[:4] + ["--env-manager", "local"] + cmd[4:], cwd=clean_clone, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"reusing prepare run {prep.info.run_id}" in again.stdout
    assert len(_runs(env, "prepare")) == 1


def test_no_entry_point_dirties_the_tree_it_runs_from(clean_clone, ml100k_dir, env, tmp_path):
    """Run from the project folder with the default store (./mlflow.db, ./mlruns, tune's optuna.db beside
    them): whatever the steps write is ignored by git, so the next run is not `git_dirty` and reuse works."""
    local = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}

    def run(entry, *params):
        r = _mlflow_run(".", clean_clone, local, *params, entry=entry)
        assert r.returncode == 0, f"{entry}: {r.stderr[-2000:]}"
        return r.stdout

    out = run("prepare", f"dataset={ml100k_dir}")
    data = out.split("data URI: ")[1].split()[0]
    out = run("train", f"data={data}", "model=popularity")
    model = out.split("model URI: ")[1].split()[0]
    run("evaluate", f"model_uri={model}")
    run("tune", "model=popularity", "trials=1", f"data={data}")
    run("recommend", f"model_uri={model}", "k=3")
    run("report", "experiment=Default")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clean_clone, capture_output=True, text=True).stdout
    assert status == "", status
    assert (clean_clone / "optuna.db").exists()  # beside the tracking store, ignored
    mlflow.set_tracking_uri(f"sqlite:///{clean_clone / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert runs and all(r.data.tags.get("git_dirty") == "false" for r in runs if "git_dirty" in r.data.tags)
