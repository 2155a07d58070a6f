"""Runs that never lie: bad files, tampered artifacts, untrusted checkpoints, caches and archives."""

import hashlib
import zipfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from recsys import config, scoring, tracking, training
from recsys.data import parsers, sources
from recsys.data import prepare as prep
from recsys.errors import RecsysError
from support import zip_folder


# --- parsers: encodings and absurd lines -----------------------------------------------------------
def test_latin1_csv_is_read_as_latin1(tmp_path):
    (tmp_path / "r.csv").write_bytes("user,item,rating\nJos\xe9,1,4\nAna,2,3\n".encode("latin-1"))
    raw = parsers.parse_generic_csv(tmp_path / "r.csv")
    assert raw.interactions["user"].tolist() == ["Jos\xe9", "Ana"]


def test_a_line_longer_than_the_limit_is_refused_without_reading_it(tmp_path, monkeypatch):
    monkeypatch.setattr(parsers, "MAX_LINE_BYTES", 1 << 20)
    with open(tmp_path / "r.csv", "wb") as f:
        f.write(b"user,item,rating\n1,1,4\n1,")
        f.write(b"9" * (3 << 20))  # a 3 MiB "field"
        f.write(b",4\n")
    with pytest.raises(RecsysError, match="line longer than 1,048,576 bytes"):
        parsers.parse_generic_csv(tmp_path / "r.csv")


def test_line_check_handles_lines_spanning_blocks(tmp_path):
    (tmp_path / "ok.csv").write_bytes(b"a,b\n" + b"x" * 100 + b"\n" + b"y" * 50)
    parsers.inspect_text(tmp_path / "ok.csv", limit=100)
    with pytest.raises(RecsysError):
        parsers.inspect_text(tmp_path / "ok.csv", limit=99)


# --- the data artifact is verified ---------------------------------------------------------------
def test_a_tampered_data_artifact_is_refused(tmp_path, implicit_data):
    prep.save(implicit_data, tmp_path / "data")
    t = pd.read_parquet(tmp_path / "data" / "train.parquet")
    t.iloc[:-5].to_parquet(tmp_path / "data" / "train.parquet", index=False)  # valid parquet, fewer rows
    with pytest.raises(RecsysError, match="data/train.parquet changed after prepare hashed it"):
        prep.load(tmp_path / "data")


@pytest.mark.parametrize("file, edit", [
    ("dataset.json", lambda d: {**d, "rating_min": 3.0}),  # a rating range that would rescale every prediction
    ("users.parquet", lambda t: t.assign(age=999)),
    ("items.parquet", lambda t: t.assign(title="edited")),
])
def test_every_file_of_the_data_artifact_is_covered_by_its_hash(tmp_path, rating_data, file, edit):
    import json

    prep.save(rating_data, tmp_path / "data")
    path = tmp_path / "data" / file
    if file.endswith(".json"):
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    else:
        edit(pd.read_parquet(path)).to_parquet(path, index=False)
    with pytest.raises(RecsysError, match=f"data/{file} changed after prepare hashed it"):
        prep.load(tmp_path / "data")


def test_a_corrupt_parquet_is_one_line(tmp_path, implicit_data):
    prep.save(implicit_data, tmp_path / "data")
    (tmp_path / "data" / "test.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(RecsysError, match="data artifact is unreadable"):
        prep.load(tmp_path / "data")


# --- checkpoints are never unpickled -----------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


def test_a_pickle_payload_in_a_checkpoint_is_refused_and_never_runs(tmp_path, implicit_data):
    hp, cfg = config.load("mf", overrides={"epochs": 1, "min_epochs": 0}, task="implicit")
    result = training.fit(implicit_data, "mf", hp, cfg, checkpoint_dir=tmp_path / "ck")
    assert scoring.load_scorer(result.checkpoint) is not None  # a real checkpoint loads
    marker = tmp_path / "pwned"
    ck = torch.load(result.checkpoint, weights_only=True)
    ck["hyper_parameters"]["extra"] = _Payload(str(marker))
    torch.save(ck, result.checkpoint)
    with pytest.raises(RecsysError, match="was refused"):
        scoring.load_scorer(result.checkpoint)
    with pytest.raises(RecsysError, match="was refused"):  # resume: one line, before Lightning reads it
        training.fit(implicit_data, "mf", hp, cfg, checkpoint_dir=tmp_path / "ck2", resume_from=result.checkpoint)
    assert not marker.exists()
    torch.load(result.checkpoint, weights_only=False)  # the payload is real: a full unpickle runs it
    assert marker.read_text() == "ran"


# --- cache, archives ---------------------------------------------------------------------------------
def test_a_changed_extracted_cache_is_extracted_again(tmp_path, monkeypatch, ml100k_dir):
    good = zip_folder(ml100k_dir)
    served = tmp_path / "served.zip"
    served.write_bytes(good)
    monkeypatch.setitem(sources.DATASETS, "ml-100k", sources.Source(served.as_uri(), hashlib.sha256(good).hexdigest()))
    assert len(prep.load_raw("ml-100k").interactions) == 2400
    udata = sources.cache_dir() / "ml-100k" / "ml-100k" / "u.data"
    udata.write_text(udata.read_text()[: len(udata.read_text()) // 2])  # truncated behind our back
    assert len(prep.load_raw("ml-100k").interactions) == 2400


def test_an_archive_placed_by_hand_is_used_and_its_hash_recorded(tmp_path, monkeypatch, ml100k_dir, capsys):
    monkeypatch.setitem(sources.DATASETS, "ml-1m", sources.Source("file:///nonexistent/ml-1m.zip"))
    cache = sources.cache_dir()
    cache.mkdir(parents=True)
    (cache / "ml-1m.zip").write_bytes(zip_folder(ml100k_dir))
    raw = prep.load_raw("ml-1m")
    assert len(raw.interactions) == 2400 and (cache / "ml-1m.zip").exists()
    assert (cache / "ml-1m.zip.sha256").read_text() == sources.sha256_file(cache / "ml-1m.zip")
    assert "could not be checked" in capsys.readouterr().err


def test_a_zip_bomb_is_refused_and_leaves_nothing(tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml/u.data", b"\0" * (300 << 20))  # 300 MiB of zeros: ~300 KiB compressed
    assert z.stat().st_size < 1 << 20
    dest = tmp_path / "out"
    with pytest.raises(RecsysError, match="refusing to extract"):
        sources.safe_extract(z, dest)
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


# --- reuse trusts only complete runs -----------------------------------------------------------------
def _fake_run(entry, params, complete=True, status="FINISHED"):
    """A run as `mlflow run` leaves it: the entry's params (defaults included) and the step's fingerprint."""
    git = tracking.git_info()
    logged = tracking.entry_params(entry, params)
    with mlflow.start_run() as run:
        mlflow.set_tags({"mlflow.project.entryPoint": entry, **git,
                         "recsys.request": tracking.request_fingerprint(logged)})
        mlflow.log_params(logged)
        if complete:
            mlflow.set_tag(tracking.COMPLETE_TAG, "true")
    mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_reuse_needs_the_completion_tag_and_compares_numbers_as_numbers():
    exp = mlflow.get_experiment_by_name("Default").experiment_id
    _fake_run("prepare", {"seed": "42", "positive_threshold": "4.0"}, complete=False)  # interrupted, yet FINISHED
    assert tracking.find_reusable_run("prepare", {"seed": "42", "positive_threshold": "4"}, exp) is None
    good = _fake_run("prepare", {"seed": "42", "positive_threshold": "4.0"})
    for spelt in ("4", "4.0", "4.00"):
        assert tracking.find_reusable_run("prepare", {"seed": "42", "positive_threshold": spelt}, exp) == good
    assert tracking.find_reusable_run("prepare", {"seed": "42", "positive_threshold": "4.5"}, exp) is None


def test_reuse_matches_the_whole_request_not_only_the_keys_asked_for(tmp_path, monkeypatch):
    exp = mlflow.get_experiment_by_name("Default").experiment_id
    data = "runs:/0123/data"
    # a train run given more than main asks (lr=0.5 epochs=1) is not the run main would start
    odd = _fake_run("train", {"data": data, "model": "mf", "task": "rating", "seed": "42", "lr": "0.5", "epochs": "1"})
    monkeypatch.setattr("recsys.tracking.orchestration._has_model", lambda rid: True)
    asked = {"data": data, "model": "mf", "task": "rating", "seed": "42"}
    assert tracking.find_reusable_run("train", asked, exp) is None
    assert tracking.find_reusable_run("train", {**asked, "lr": "0.5", "epochs": "1.0"}, exp) == odd
    # a prepare run with another value for a param left at its default
    _fake_run("prepare", {"dataset": "ml-100k", "test_frac": "0.5", "min_user_ratings": "300"})
    assert tracking.find_reusable_run("prepare", {"dataset": "ml-100k"}, exp) is None
    plain = _fake_run("prepare", {"dataset": "ml-100k", "test_frac": "0.1"})  # the declared default, spelt out
    assert tracking.find_reusable_run("prepare", {"dataset": "ml-100k"}, exp) == plain
    # the same config path with other content is another request
    cfg = tmp_path / "my.yaml"
    cfg.write_text("training:\n  lr: 0.01\n")
    first = _fake_run("train", {**asked, "config": str(cfg)})
    assert tracking.find_reusable_run("train", {**asked, "config": str(cfg)}, exp) == first
    cfg.write_text("training:\n  lr: 0.02\n")
    assert tracking.find_reusable_run("train", {**asked, "config": str(cfg)}, exp) is None
    # a run without a fingerprint (started outside `mlflow run`, or before it was recorded) is never reused
    with mlflow.start_run() as bare:
        mlflow.set_tags({"mlflow.project.entryPoint": "prepare", **tracking.git_info(), tracking.COMPLETE_TAG: "true"})
        mlflow.log_params(tracking.entry_params("prepare", {"dataset": "ml-1m"}))
    assert bare.info.status and tracking.find_reusable_run("prepare", {"dataset": "ml-1m"}, exp) is None


def test_a_train_run_without_its_model_is_never_reused():
    exp = mlflow.get_experiment_by_name("Default").experiment_id
    _fake_run("train", {"model": "mf"})  # complete tag but no model artifact
    assert tracking.find_reusable_run("train", {"model": "mf"}, exp) is None


def test_canonical_numbers():
    assert tracking.canonical("4") == tracking.canonical("4.0") == tracking.canonical(" 4.00 ") == "4"
    assert tracking.canonical("0.018") == tracking.canonical("1.8e-2")
    assert tracking.canonical("mf") == "mf" and tracking.canonical("") == ""
