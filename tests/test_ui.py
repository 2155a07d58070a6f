"""The MLflow UI, opened in headless Chromium against a real `mlflow server` on loopback (slow)."""

import os
import shutil
import subprocess
import sys

import mlflow
import pytest

from steps import evaluate as evaluate_step
from steps import prepare as prepare_step
from steps import train as train_step
from support import free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    db = os.environ["MLFLOW_TRACKING_URI"]
    mlflow.search_experiments()  # tables exist before the server starts
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_run_pages_show_the_dataset_and_the_model_page_shows_evaluate_metrics(ml100k_dir, server):
    from playwright.sync_api import sync_playwright

    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    train = train_step.main(["--data", f"runs:/{data}/data", "--epochs", "1", "--min_epochs", "0"])
    ev = evaluate_step.main(["--model-uri", f"runs:/{train}/model"])
    exp = mlflow.get_run(train).info.experiment_id
    model_id = mlflow.models.get_model_info(f"runs:/{train}/model").model_id
    pages = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name, path, wait in (("train", f"runs/{train}", "Datasets"), ("evaluate", f"runs/{ev}", "Datasets"),
                                     ("model", f"models/{model_id}", "evaluate mf test")):
                page.goto(f"{server}/#/experiments/{exp}/{path}")
                page.wait_for_selector(f"text={wait}", timeout=60_000)
                page.wait_for_selector("text=ml-100k", timeout=60_000)
                pages[name] = page.inner_text("body")
        finally:
            browser.close()
    digest = mlflow.get_run(train).inputs.dataset_inputs[0].dataset.digest
    for name, context in (("train", "Training"), ("evaluate", "Evaluation")):
        text = pages[name]
        assert f"ml-100k ({digest})" in text and context in text  # Datasets: the data, in its context
        if name == "evaluate":
            assert "\ntest/n_rows\n" not in text and "count.test/n_rows" in text  # counts: tags, not metrics
        else:
            assert "test/" not in text and "best_val_rmse" in text  # test is evaluate's, unless asked
    assert pages["evaluate"].count("mf on ml-100k test") == 1  # the one-line description
    # the model's page lists the evaluate run's metrics against the dataset
    model = pages["model"]
    assert "evaluate mf test" in model and f"ml-100k (#{digest})" in model and "test/rmse" in model
