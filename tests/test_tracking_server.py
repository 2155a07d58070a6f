"""A real tracking server on PostgreSQL, both started here on loopback (slow): main runs against it."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
from support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    assert found, f"{name} not found: install PostgreSQL (.ci/run does: apt-get install -y postgresql)"
    return found


@pytest.fixture
def postgres():
    """initdb + pg_ctl in a temporary folder on a free port; initdb refuses root, so as `nobody` then."""
    folder = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    as_user = []
    if os.geteuid() == 0:
        os.chown(folder, 65534, 65534)
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    port = free_port()
    data = folder / "data"
    try:
        subprocess.run([*as_user, _pg_bin("initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust"], check=True,
                       capture_output=True)
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=mlflow dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE mlflow")
        yield f"postgresql+psycopg://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def server(postgres, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres,
                             "--serve-artifacts", "--artifacts-destination", str(tmp_path / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", 180)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_main_against_a_postgres_backed_server_logs_every_run_metric_and_artifact(server, ml100k_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    env.update(MLFLOW_TRACKING_URI=server, RECSYS_DATA_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local",
                        "-P", f"dataset={ml100k_dir}", "-P", "models=mf", "-P", "epochs=1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    mlflow.set_tracking_uri(server)
    runs = {x.data.tags.get("mlflow.project.entryPoint"): x for x in
            mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert set(runs) == {"main", "prepare", "train", "evaluate"}
    assert all(x.info.status == "FINISHED" and x.data.tags.get("recsys.complete") == "true" for x in runs.values())
    main = runs["main"].info.run_id
    assert all(runs[s].data.tags["mlflow.parentRunId"] == main for s in ("prepare", "train", "evaluate"))
    # steps passed only URIs, and the artifacts went through the server (mlflow-artifacts:)
    assert runs["train"].data.params["data"] == f"runs:/{runs['prepare'].info.run_id}/data"
    assert runs["evaluate"].data.params["model_uri"] == f"runs:/{runs['train'].info.run_id}/model"
    assert runs["train"].info.artifact_uri.startswith("mlflow-artifacts:")
    client = mlflow.MlflowClient()
    assert "data/dataset.json" in {a.path for a in client.list_artifacts(runs["prepare"].info.run_id, "data")}
    assert {"checkpoint", "config.yaml"} <= {a.path for a in client.list_artifacts(runs["train"].info.run_id)}
    assert {"metrics.json", "per_user.parquet"} <= {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id)}
    assert "test/rmse" in runs["evaluate"].data.metrics and client.get_metric_history(runs["train"].info.run_id,
                                                                                       "val/rmse")
    assert "leaderboard.md" in {a.path for a in client.list_artifacts(main)}
    model = mlflow.pyfunc.load_model(f"runs:/{runs['train'].info.run_id}/model")  # through the server
    assert len(model.predict(__import__("pandas").DataFrame({"user": ["1"]}), params={"k": 3})) == 3
