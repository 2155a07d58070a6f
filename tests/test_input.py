"""Careless and hostile input refused before anything is logged, and what an interrupt tells the user."""

import signal

import mlflow
import pytest

from recsys import config, interrupts
from recsys.errors import Interrupted, RecsysError
from recsys.tracking import runs


@pytest.mark.parametrize("model, overrides, n_items, message", [
    ("sasrec", {"max_len": 1_000_000_000}, 0, "max_len=1000000000: input should be less than or equal to 1024"),
    ("sasrec", {"num_heads": 3}, 0, "num_heads=3 must divide embedding_dim=64"),
    ("autoint", {"num_heads": 3}, 0, "num_heads=3 must divide embedding_dim=32"),
    ("mf", {"loss": "sampled_softmax", "num_negatives": 1_000_000}, 50, "num_negatives=1000000 must be below the catalogue's 50 items"),
    ("fm", {"num_negatives": 50}, 50, "num_negatives=50 must be below the catalogue's 50 items"),
    ("sasrec", {"loss": "sampled_softmax", "num_negatives": 60}, 50, "must be below the catalogue's 50 items"),
])
def test_values_that_would_fail_inside_torch_are_one_line_config_errors(model, overrides, n_items, message):
    with pytest.raises(RecsysError) as e:
        config.load(model, overrides=overrides, task="implicit", n_items=n_items)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_full_softmax_draws_no_negatives_so_their_number_is_not_checked():
    _, cfg = config.load("sasrec", task="implicit", n_items=50)  # num_negatives 256 > 50 items: unused by the softmax
    assert cfg.num_negatives == 256 and config.resolve_loss(cfg.loss, "implicit", config.model_class("sasrec"), 50) == "softmax"
    _, cfg = config.load("mf", overrides={"num_negatives": 100}, task="implicit", n_items=50)
    assert cfg.num_negatives == 100 and not config.draws_negatives(cfg.loss, "implicit", "mf", 50)  # mf's: softmax
    for name in ("itemknn", "ease", "popularity"):  # closed form: nothing drawn, even from a 2-item catalogue
        _, cfg = config.load(name, task="implicit", n_items=2)
        assert cfg.num_negatives == 4 and not config.draws_negatives(cfg.loss, "implicit", name, 2)
    with pytest.raises(RecsysError, match=r"num_negatives=\d must be below the catalogue's 2 items"):
        config.load("ncf", task="implicit", n_items=2)  # a pair model draws them: refused


def test_train_refuses_them_before_it_logs_a_param(implicit_data, tmp_path, capsys):
    from recsys.data import prepare as prep
    from steps import train as train_step

    with mlflow.start_run() as run:
        prep.save(implicit_data, tmp_path / "data")
        mlflow.log_artifacts(str(tmp_path / "data"), "data")
    with pytest.raises(SystemExit) as e:
        train_step.main(["--data", f"runs:/{run.info.run_id}/data", "--model", "sasrec", "--max_len", "1000000000"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "max_len=1000000000" in err and "Traceback" not in err
    failed = mlflow.search_runs(order_by=["attributes.start_time DESC"], output_format="list")[0]
    assert failed.info.run_id != run.info.run_id and failed.info.status == "FAILED"
    assert not failed.data.params and "max_len=1000000000" in failed.data.tags["error"]


def test_an_interrupt_offers_resume_only_once_a_checkpoint_exists(tmp_path):
    interrupts._STEP.update(name="train", run_id="abc")
    try:
        interrupts.resume_point(tmp_path / "last.ckpt")
        before = interrupts.message(signal.SIGINT)
        assert "resume_from" not in before and "no checkpoint to resume from" in before
        (tmp_path / "last.ckpt").write_bytes(b"")
        assert interrupts.message(signal.SIGTERM).endswith("(continue with -P resume_from=abc)")
    finally:
        interrupts._STEP.clear()


def test_an_interrupted_trial_run_is_killed_and_tagged_interrupted():
    with mlflow.start_run():
        with pytest.raises(Interrupted):
            with runs.child_run("trial 0") as child:
                raise Interrupted(signal.SIGINT)
    trial = mlflow.get_run(child.info.run_id)
    assert trial.info.status == "KILLED" and trial.data.tags["optuna.state"] == "INTERRUPTED"
    assert trial.data.tags["error"] == "interrupted by SIGINT"
