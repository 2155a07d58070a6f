"""Resuming through `mlflow run`: a resumed run says what it trained, a chain of resumes works, and a
resume that has nothing to train says so (slow: real `mlflow run`)."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SMALL = ["batch_size=64", "threads=1", "embedding_dim=16", "max_len=20", "patience=50"]


def _train(env, cwd, *params):
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "train", "--env-manager", "local"]
    return subprocess.run(cmd + [x for p in params for x in ("-P", p)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _latest_train():
    return mlflow.search_runs(search_all_experiments=True, filter_string="tags.`mlflow.project.entryPoint` = 'train'",
                              order_by=["attributes.start_time DESC"], output_format="list")[0]


def test_a_chain_of_sasrec_resumes_records_what_it_trained_and_refuses_what_cannot_work(tmp_path):
    from steps import prepare as prepare_step

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    data = prepare_step.main(["--dataset", "synthetic", "--task", "implicit", "--split", "leave_last_out",
                              "--n-users", "120", "--n-items", "150", "--n-ratings", "4000", "--positive-threshold", "1",
                              "--eval-negatives", "20"])
    r = _train(env, tmp_path, f"data=runs:/{data}/data", "model=sasrec", "epochs=2", "min_epochs=2", *SMALL)
    assert r.returncode == 0, r.stderr[-3000:]
    first = _latest_train()
    ids = [first.info.run_id]
    for epochs in (3, 4):  # resume the first run, then the resumed one
        r = _train(env, tmp_path, f"resume_from={ids[-1]}", f"epochs={epochs}", f"min_epochs={epochs}")
        assert r.returncode == 0, r.stderr[-3000:]
        run = _latest_train()
        ids.append(run.info.run_id)
        assert run.info.status == "FINISHED" and run.data.params["resume_from"] == ids[-2]
        assert run.data.tags["model"] == "sasrec" and run.data.tags["mlflow.runName"] == "train sasrec"
        assert run.data.params["model"] == "auto"  # what was asked; never MLproject's mf
        assert run.data.params["model.max_len"] == "20" and run.data.params["training.epochs"] == str(epochs)
        assert "model.dropout" in run.data.params and run.data.params["data_uri"] == f"runs:/{data}/data"
    # nothing left to train: the true reason, before anything is logged
    r = _train(env, tmp_path, f"resume_from={ids[-1]}", "epochs=3")
    assert r.returncode != 0
    refused = _latest_train()
    assert refused.info.status == "FAILED"
    assert refused.data.tags["error"] == (f"run {ids[-1]} already trained 4 epochs; pass epochs > 4 to train on from "
                                          "its last checkpoint")
    assert not [k for k in refused.data.params if k.startswith("model.")]
    # another model than the one it trained
    r = _train(env, tmp_path, f"resume_from={ids[-1]}", "model=mf", "epochs=6")
    assert r.returncode != 0 and "trained sasrec, not mf" in _latest_train().data.tags["error"]
    # what the run was stays what it is: other data, another task, another shape, each one line, nothing logged
    other = prepare_step.main(["--dataset", "synthetic", "--task", "implicit", "--n-users", "100", "--n-items", "120",
                               "--n-ratings", "3000", "--positive-threshold", "1", "--eval-negatives", "5", "--seed", "7"])
    for params, said in (([f"data=runs:/{other}/data"], f"trained on runs:/{data}/data, not runs:/{other}/data"),
                         (["task=rating"], "trained the implicit task, not rating"),
                         (["embedding_dim=32"], "trained with embedding_dim=16, not '32'"),
                         (["max_len=30"], "trained with max_len=20, not '30'")):
        r = _train(env, tmp_path, f"resume_from={ids[-1]}", "epochs=6", *params)
        refused = _latest_train()
        assert r.returncode != 0 and refused.info.status == "FAILED", r.stderr[-2000:]
        assert said in refused.data.tags["error"] and "resume changes only training and runtime keys" in \
            refused.data.tags["error"], refused.data.tags["error"]
        assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] and "Traceback" not in r.stderr
        assert not [k for k in refused.data.params if k.startswith(("model.", "training."))]


def test_resuming_a_one_cycle_run_past_the_epochs_its_cycle_was_laid_over_is_one_line(tmp_path):
    import torch

    from recsys.errors import RecsysError
    from recsys.training.checks import check_more_epochs

    ck = tmp_path / "last.ckpt"
    torch.save({"epoch": 2, "global_step": 30, "hyper_parameters": {"scheduler": "onecycle", "total_steps": 30}}, ck)
    for epochs in (3, 5):  # a finished one-cycle run (what the scheduler would meet as 'Tried to step 31 times')
        with pytest.raises(RecsysError, match=r"finished its one-cycle schedule \(3 epochs\); .* start a new run "
                                              rf"with epochs={max(epochs, 4)}$"):
            check_more_epochs(ck, epochs, "r1")
    # interrupted after 3 of the 6 epochs its cycle was laid over: on to 6, not past
    torch.save({"epoch": 2, "global_step": 30, "hyper_parameters": {"scheduler": "onecycle", "total_steps": 60}}, ck)
    check_more_epochs(ck, 6, "r1")
    with pytest.raises(RecsysError, match=r"laid over 6 epochs .* resume with epochs=6 at most, or start a new run "
                                          r"with epochs=8"):
        check_more_epochs(ck, 8, "r1")
    torch.save({"epoch": 2, "global_step": 30, "hyper_parameters": {"scheduler": "none", "total_steps": 30}}, ck)
    check_more_epochs(ck, 5, "r1")  # a constant rate trains on for the extra epochs
