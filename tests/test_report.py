"""The leaderboard: statistics by hand, bad input, and the HTML page opened in a real browser."""

import base64
import io
import shutil
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from recsys import report
from steps import evaluate as evaluate_step
from steps import prepare as prepare_step
from steps import report as report_step
from steps import train as train_step
from support import module_store

ROOT = Path(__file__).resolve().parents[1]


def _record(run_id, model, seed, ndcg, peer="", config=None):
    tags = {"dataset": "d", "task": "implicit", "data_split": "leave_last_out", "tie_break": "random",
            "positive_threshold": "1", "protocol": "leave_last_out/both", "eval_split": "test", "model": model,
            "seed": str(seed), "peer": peer}
    return {"run_id": run_id, "tags": tags, "metrics": {"test/ndcg_at_10": ndcg, "test/hr_at_10": 2 * ndcg},
            "train_seconds": 1.0, "history": {}, "config": config or {}}


def _per_user(values):
    return pd.DataFrame({"user": np.arange(len(values)), "ndcg_at_10": values})


def test_leaderboard_states_sd_with_ddof_1_and_marks_noise():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    records, per_user = [], {}
    for seed, shift in zip((1, 2, 3), (0.0, 0.01, 0.02)):
        for model, delta in (("strong", 0.3), ("twin", 0.3 - 1e-4), ("weak", 0.0)):
            rid = f"{model}{seed}"
            values = np.clip(base * 0.2 + delta * (model != "weak") + shift + rng.normal(0, 0.01, 400), 0, 1)
            per_user[rid] = _per_user(values)
            records.append(_record(rid, model, seed, float(values.mean())))
    [g] = report.build(records, per_user)
    rows = {r.model: r for r in g.rows}
    strong = [r["metrics"]["test/ndcg_at_10"] for r in rows["strong"].runs]
    mean, sd, n = rows["strong"].stats["test/ndcg_at_10"]
    assert n == 3 and sd == pytest.approx(np.std(strong, ddof=1)) and mean == pytest.approx(np.mean(strong))
    assert g.rows[-1].model == "weak" and g.rows[-1].diff[3] is True  # clearly worse: significant
    twin = rows["twin"] if g.rows[0].model == "strong" else rows["strong"]
    assert twin.diff[3] is False  # within noise
    md = report.markdown([g], "exp")
    assert "no (within noise)" in md and "(n=3)" in md


def test_two_configurations_of_one_model_are_two_rows_named_by_what_differs():
    base = {"training.lr": "0.0011", "training.epochs": "10", "model.mf_dim": "49"}
    records = []
    for seed in (1, 2):  # the default ncf on two seeds, a variant on one (newest first, as the store gives them)
        records.append(_record(f"v{seed}", "ncf", seed, 0.05, config={**base, "training.lr": "0.018"}) if seed == 1
                       else _record("x", "popularity", seed, 0.03))
        records.append(_record(f"d{seed}", "ncf", seed, 0.04, config=base))
    [g] = report.build(records, {})
    names = {report.table(g)[1][i][0].strip("*") for i in range(len(g.rows))}
    assert {"ncf", "ncf (lr=0.018)", "popularity [baseline]"} == names
    default = next(r for r in g.rows if r.model == "ncf" and not r.variant)
    assert [x["run_id"] for x in default.runs] == ["d1", "d2"]


def test_a_run_shortened_or_changed_by_hand_is_labelled_even_when_it_is_the_models_only_configuration():
    from recsys.config_fields import set_by_hand

    hand = set_by_hand({"epochs": "3", "seed": "43", "threads": "1", "precision": "bf16-mixed"})
    assert hand == ["epochs=3", "precision=bf16-mixed"]  # the seed and where it ran are no change to the model
    short = _record("s", "sasrec", 42, 0.057, config={"training.epochs": "3"})
    short["set_by_hand"] = hand
    records = [short, _record("m", "mf", 42, 0.05)]
    [g] = report.build(records, {})
    names = {report.table(g)[1][i][0].strip("*") for i in range(len(g.rows))}
    assert names == {"sasrec (-P epochs=3, -P precision=bf16-mixed)", "mf"}


def test_every_model_is_paired_against_the_strongest_baseline():
    rng = np.random.default_rng(1)
    base = rng.random(500) * 0.2
    records, per_user = [], {}
    for seed in (1, 2, 3):
        for model, lift in (("popularity", 0.0), ("global_mean", -0.05), ("clear", 0.05), ("level", 0.0)):
            rid = f"{model}{seed}"
            values = np.clip(base + 0.1 + lift + rng.normal(0, 0.02, 500), 0, 1)
            per_user[rid] = _per_user(values)
            records.append(_record(rid, model, seed, float(values.mean())))
    [g] = report.build(records, per_user)
    rows = {r.model: r for r in g.rows}
    pop = {r["tags"]["seed"]: per_user[r["run_id"]]["ndcg_at_10"] for r in rows["popularity"].runs}
    by_hand = np.mean([per_user[r["run_id"]]["ndcg_at_10"] - pop[r["tags"]["seed"]] for r in rows["clear"].runs], axis=0)
    mean, se, n, significant = rows["clear"].vs_baseline
    assert mean == pytest.approx(by_hand.mean()) and se == pytest.approx(by_hand.std(ddof=1) / np.sqrt(500))
    assert n == 500 and significant  # the stronger of the two baselines is the reference, and is cleared
    assert rows["level"].vs_baseline[3] is False  # level with popularity: not a clear win
    assert rows["popularity"].vs_baseline is None and rows["global_mean"].vs_baseline is None
    assert "vs baseline" in report.markdown([g], "exp")


def test_a_single_run_gets_a_95_percent_interval_over_users():
    values = np.linspace(0, 1, 101)
    [g] = report.build([_record("a", "m", 1, float(values.mean()))], {"a": _per_user(values)})
    lo, hi = g.rows[0].interval
    se = values.std(ddof=1) / np.sqrt(101)
    assert lo == pytest.approx(0.5 - 1.96 * se) and hi == pytest.approx(0.5 + 1.96 * se)


def test_runs_of_other_splits_or_tie_rules_are_never_in_one_table():
    a, b = _record("a", "m", 1, 0.1), _record("b", "m", 1, 0.2)
    b["tags"]["tie_break"] = "item_id"
    groups = report.build([a, b], {})
    assert len(groups) == 2 and all(len(g.rows) == 1 for g in groups)


def _fails(argv, capsys, match):
    with pytest.raises(SystemExit) as e:
        report_step.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [err.strip().splitlines()[-1]]
    assert match in err and "Traceback" not in err
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    assert run.info.status == "FAILED" and match in run.data.tags["error"]
    assert not mlflow.MlflowClient().list_artifacts(run.info.run_id)


def test_report_on_an_unknown_or_empty_experiment_is_one_line(capsys):
    _fails(["--experiment", "nope"], capsys, "experiment 'nope' does not exist")
    mlflow.create_experiment("empty")
    _fails(["--experiment", "empty"], capsys, "has no finished evaluate runs")


@pytest.fixture(scope="module")
def small_experiment(tmp_path_factory, ml100k_dir, empty_store):
    """popularity and mf (1 epoch) on tiny implicit data, evaluated, in experiment `small`."""
    with module_store(tmp_path_factory, empty_store, "rep") as db:
        mlflow.set_experiment("small")
        data = prepare_step.main(["--dataset", str(ml100k_dir), "--task", "implicit", "--split", "leave_last_out",
                                  "--positive-threshold", "1", "--eval-negatives", "20"])
        for model in ("popularity", "mf"):
            train = train_step.main(["--data", f"runs:/{data}/data", "--model", model, "--epochs", "2",
                                     "--min_epochs", "0"])
            evaluate_step.main(["--model-uri", f"runs:/{train}/model", "--k", "10"])
        yield {"db": db, "data": data}
        mlflow.set_experiment("Default")


@pytest.mark.slow
def test_peers_are_fitted_on_the_same_split_and_logged_beside(small_experiment, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{small_experiment['db']}")
    mlflow.set_tracking_uri(f"sqlite:///{small_experiment['db']}")
    sys.path.insert(0, str(ROOT / "bench"))
    import peers

    mlflow.set_experiment("small")
    lines = peers.run_peers(f"runs:/{small_experiment['data']}/data", threads=1, only={"implicit:ALS", "peer:popularity"})
    assert len(lines) == 2
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.peer != ''", output_format="list")
    assert {r.data.tags["model"] for r in runs} == {"implicit:ALS", "peer:popularity"}
    project = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                 filter_string="tags.step = 'evaluate' and tags.model = 'popularity'")[0]
    peer_pop = next(r for r in runs if r.data.tags["model"] == "peer:popularity")
    # the same split and the same evaluator: popularity by counts scores exactly as the project's popularity
    assert peer_pop.data.tags["content_hash"] == project.data.tags["content_hash"]
    assert peer_pop.data.metrics["test/ndcg_at_10"] == pytest.approx(project.data.metrics["test/ndcg_at_10"])
    assert peer_pop.data.metrics["test/hr_at_10"] == pytest.approx(project.data.metrics["test/hr_at_10"])


@pytest.mark.slow
def test_report_html_renders_in_a_browser_with_tables_and_images(small_experiment, monkeypatch, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{small_experiment['db']}")
    mlflow.set_tracking_uri(f"sqlite:///{small_experiment['db']}")
    run_id = report_step.main(["--experiment", "small"])
    page_file = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report.html", dst_path=str(tmp_path)))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(page_file.as_uri())
            rows = page.eval_on_selector_all("table tr td:first-child", "cells => cells.map(c => c.innerText)")
            images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.src])")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert any("popularity" in r for r in rows) and any(r.startswith("mf") for r in rows)
    # metric vs time, and a learning curve for each model
    assert len(images) >= 3
    for complete, w, h, src in images:
        assert complete and w > 100 and h > 100  # decoded by the browser
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("L"))
        assert pixels.std() > 5  # not blank
    screenshot = np.asarray(Image.open(io.BytesIO(shot)).convert("L"))
    assert screenshot.shape[0] > 900 and screenshot.std() > 5


def test_the_seed_level_t_quantiles_are_students():
    from recsys.paired import t95

    # the two-sided 95% table every statistics text prints
    for df, q in {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 30: 2.042}.items():
        assert round(t95(df), 3) == q


def test_a_blend_row_lists_its_weights_seed_by_seed():
    records, per_user = [], {}
    for seed in (1, 2):
        for model, value, weights in (("mf", 0.10, ""), ("blend(mf+sasrec)", 0.12, f"mf 0.{seed}000, sasrec 0.{10 - seed}000")):
            rid = f"{model}{seed}"
            per_user[rid] = _per_user(np.full(50, value))
            records.append({**_record(rid, model, seed, value), "blend_weights": weights})
    [g] = report.build(records, per_user)
    md = report.markdown([g], "exp")
    assert "- blend(mf+sasrec) weights, fitted on validation: seed 1: mf 0.1000, sasrec 0.9000; seed 2: mf 0.2000, " \
           "sasrec 0.8000" in md
    assert md.count("weights, fitted on validation") == 1  # mf is no blend


def test_any_mix_of_protocols_tasks_and_per_user_tables_renders_without_a_traceback():
    """A property test: random experiments (both tasks, full / sampled / both / sampled-users protocols,
    blends, runs missing metrics or per-user tables, per-user tables without the headline column, as a
    sampled-only evaluation writes them) always build, render as markdown and as a page."""
    from recsys import report_page

    rng = np.random.default_rng(7)
    protocols = {"implicit": ["leave_last_out/both", "leave_last_out/sampled", "leave_last_out/full",
                              "leave_last_out/both@50users"], "rating": ["random/rating"]}
    for trial in range(40):
        records, per_user = [], {}
        for i in range(int(rng.integers(1, 9))):
            task = str(rng.choice(["implicit", "rating"]))
            protocol = str(rng.choice(protocols[task]))
            model = str(rng.choice(["mf", "popularity", "global_mean", "blend(mf+popularity)", "ncf"]))
            rid = f"r{trial}-{i}"
            names = [f"test/{c}" for c in report.TASKS[task].columns]
            if protocol.endswith("/sampled"):
                names = [n for n in names if "sampled" in n]
            metrics = {n: float(rng.random()) for n in names if rng.random() < 0.9}
            tags = {"dataset": "d", "task": task, "data_split": protocol.split("/")[0], "tie_break": "random",
                    "positive_threshold": "1", "protocol": protocol, "eval_split": "test", "model": model,
                    "seed": str(rng.integers(0, 3))}
            records.append({"run_id": rid, "tags": tags, "metrics": metrics, "train_seconds": float(rng.random()),
                            "history": {}, "config": {}})
            if rng.random() < 0.7:
                n = int(rng.integers(1, 30))
                cols = {"user": np.arange(n)}
                if task == "rating":
                    cols.update(rmse=rng.random(n), n=rng.integers(1, 5, n))
                elif not protocol.endswith("/sampled"):
                    cols["ndcg_at_10"] = rng.random(n)
                per_user[rid] = pd.DataFrame(cols)
        groups = report.build(records, per_user)
        md = report.markdown(groups, "exp")
        assert md.startswith("#") or md
        report_page.html_page(groups, "exp")
        for g in groups:
            if g.key["protocol"].endswith("/sampled") and g.rows:  # ranked by the sampled headline
                assert all("test/sampled_ndcg_at_10" in r.stats for r in g.rows)


def test_a_blend_that_does_not_earn_its_row_is_listed_under_the_table_not_ranked():
    rng = np.random.default_rng(3)
    records, per_user = [], {}
    for seed in (1, 2):
        for model, delta, verdict in (("mf", 0.3, None), ("blend(popularity+mf)", 0.3, "degenerate: 100% of its "
                                      "weight on one member"), ("popularity", 0.0, None)):
            rid = f"{model}{seed}"
            values = np.clip(rng.random(200) * 0.2 + delta, 0, 1)
            per_user[rid] = _per_user(values)
            rec = _record(rid, model, seed, float(values.mean()))
            if verdict:
                rec.update(blend_weights="popularity 0.0000, mf 1.0000", blend_verdict=verdict)
            records.append(rec)
    [g] = report.build(records, per_user)
    assert [r.model for r in g.rows] == ["mf", "popularity"] and [r.model for r in g.left_out] == ["blend(popularity+mf)"]
    md = report.markdown([g], "exp")
    assert "blend(popularity+mf) (" in md and "is left out of the ranking: it does not earn its row on 2 of its 2 seeds (degenerate" in md
    assert "blend(popularity+mf)" not in report.headline([g])


def test_main_starts_the_models_that_took_longest_on_this_data_first(capsys):
    """main's schedule reads the store: each model's latest finished train (and evaluate) run on the same
    data, the longest first; a model never run on it goes first, as listed; other data does not count."""
    from recsys import tracking

    client = mlflow.MlflowClient()
    exp = client.create_experiment("schedule")
    prep = client.create_run(exp, tags={"step": "prepare", "content_hash": "abc"}).info.run_id
    client.set_terminated(prep, "FINISHED")

    def ran(step, model, seconds, digest="abc", status="FINISHED", start=1_000_000):
        r = client.create_run(exp, start_time=start, tags={"step": step, "model": model, "content_hash": digest,
                                                            "data_uri": f"runs:/{prep}/data"})
        client.set_terminated(r.info.run_id, status, end_time=start + int(seconds * 1000))

    ran("train", "mf", 50)
    ran("evaluate", "mf", 30)
    ran("train", "fm", 70)
    ran("train", "ncf", 900, start=500_000)  # an older run of ncf: its latest is what counts
    ran("train", "ncf", 20)
    ran("train", "sasrec", 999, digest="other")  # other data
    ran("train", "itemknn", 999, status="FAILED")
    past = tracking.past_seconds(prep, ["mf", "fm", "ncf", "sasrec", "itemknn"], exp)
    assert past == {"mf": 80, "fm": 70, "ncf": 20}
    order = tracking.longest_first(["ncf", "mf", "sasrec", "fm", "itemknn"], past)
    assert order == ["sasrec", "itemknn", "mf", "fm", "ncf"]
    assert "order: sasrec, itemknn, mf (80s last time), fm (70s last time), ncf (20s last time)" in capsys.readouterr().out
    assert tracking.longest_first(["ncf", "mf"], {}) == ["ncf", "mf"]  # nothing known: as listed


def test_main_counts_what_a_step_used_while_it_runs_cpu_seconds_and_peak_memory():
    """A step forked from the preloaded interpreter is not main's child to wait for: its CPU seconds and peak
    resident memory are read from /proc while it runs, and the last reading stands once it is gone."""
    import subprocess

    from recsys.tracking.orchestration import Child

    code = "import time; x = bytearray(300 * 2**20); t = time.process_time()\nwhile time.process_time() - t < 1.0: pass"
    proc = subprocess.Popen([sys.executable, "-c", code])
    child = Child("busy", type("Sub", (), {"run_id": "r", "command_proc": proc})())
    while not child.done():
        child.sample()
        time.sleep(0.05)
    child.sample()  # gone: nothing changes
    assert 0.8 <= child.cpu_s < 5 and 0.28 < child.peak_gib < 1
