"""Multi-process training: each process trains its shard; only rank 0 talks to MLflow."""

import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from recsys.data.negatives import sorted_keys
from recsys.training.batches import PAIRS, POINTWISE, TensorBatches
from steps import prepare as prepare_step

ROOT = Path(__file__).resolve().parents[1]


def _batches(rng_seed=3, n=1003, n_items=40, negatives=2, pairwise=False):
    rng = np.random.default_rng(rng_seed)
    u, i = rng.integers(0, 50, n), rng.integers(0, n_items, n)
    return TensorBatches(u, i, np.ones(n), batch_size=64, seed=9, n_items=n_items, num_negatives=negatives,
                         seen_keys=sorted_keys(u, i, n_items), kind=PAIRS if pairwise else POINTWISE, chunk=4)


def _epoch(tb):
    out = []
    for step in tb:
        out += step if isinstance(step, list) else [step]
    return {k: torch.cat([b[k] for b in out]) for k in out[0]}, len(out)


@pytest.mark.parametrize("pairwise", [False, True])
def test_each_process_gets_its_own_shard_with_its_own_negatives(pairwise):
    one = _batches(pairwise=pairwise)
    _, n_one = _epoch(one)
    shards = []
    for rank in range(2):
        tb = _batches(pairwise=pairwise)
        tb.shard(rank, 2)
        data, steps = _epoch(tb)
        assert steps == tb.n_batches == len(tb)  # the length Lightning is told matches what is yielded
        shards.append((data, steps))
    assert shards[0][1] == shards[1][1]  # the same number of steps on every process (DDP would hang otherwise)
    pos = [d["target"] == 1 if not pairwise else torch.ones(len(d["user_id"]), dtype=torch.bool) for d, _ in shards]
    n_pos = 1003 if not pairwise else 1003 * 2
    per = math.ceil(1003 / 2) * (1 if not pairwise else 2)
    assert [int(p.sum()) for p in pos] == [per, per]  # half of the epoch's positives each (one padded)
    pairs = [set(zip(d["user_id"][p].tolist(), d["item_id"][p].tolist())) for (d, _), p in zip(shards, pos)]
    positives = set(zip(one.user.tolist(), one.item.tolist()))
    assert pairs[0] | pairs[1] == positives  # every positive seen once per epoch, by one process or the other
    key = "neg_item_id" if pairwise else "item_id"
    negs = [d[key][~p] if not pairwise else d[key] for (d, _), p in zip(shards, pos)]
    assert not torch.equal(negs[0][:50], negs[1][:50])  # two random streams, not one copied
    assert sum(len(d["user_id"]) for d, _ in shards) >= n_pos  # nothing dropped
    assert n_one == one.n_batches


def test_one_process_is_unchanged_by_sharding():
    a, b = _batches(), _batches()
    b.shard(0, 1)
    (da, na), (db, nb) = _epoch(a), _epoch(b)
    assert na == nb and all(torch.equal(da[k], db[k]) for k in da)


@pytest.mark.slow
def test_two_processes_train_one_run_with_half_the_samples_each(ml100k_dir, tmp_path):
    """`-P devices=2 -P strategy=ddp` on CPU (gloo): one run, one set of params, one model, one checkpoint;
    each process saw half the epoch; accuracy as one process's within noise."""
    data = prepare_step.main(["--dataset", str(ml100k_dir)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    base = [sys.executable, "-m", "steps.train", "--data", f"runs:/{data}/data", "--model", "mf", "--epochs", "3",
            "--accelerator", "cpu"]
    one = subprocess.run(base, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(base + ["--devices", "2", "--strategy", "ddp"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("model URI:") == 1 and two.stdout.count("epoch 3/3") == 1  # rank 0 alone prints
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="tags.step = 'train'", order_by=["attributes.start_time ASC"])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}  # no orphan run from rank 1
    every = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(every) == 3  # prepare + the two trains
    single, ddp = runs
    assert ddp.data.tags["world_size"] == "2" and single.data.tags["world_size"] == "1"
    assert ddp.data.params["runtime.devices"] == "2" and ddp.data.params["runtime.strategy"] == "ddp"
    client = mlflow.MlflowClient()
    n_train = 2400 * 8 // 10
    s1 = client.get_metric_history(single.info.run_id, "train/samples_per_process")
    s2 = client.get_metric_history(ddp.info.run_id, "train/samples_per_process")
    assert len(s2) == 3 and len(client.get_metric_history(ddp.info.run_id, "val/rmse")) == 3  # logged once per epoch
    assert abs(s1[-1].value - n_train) <= 2 and abs(s2[-1].value - math.ceil(s1[-1].value / 2)) <= 1
    models = mlflow.search_logged_models(experiment_ids=[ddp.info.experiment_id], output_format="list")
    assert sum(m.source_run_id == ddp.info.run_id for m in models) == 1
    ckpts = {a.path for a in client.list_artifacts(ddp.info.run_id, "checkpoint")}
    assert ckpts == {"checkpoint/best.ckpt", "checkpoint/last.ckpt"}
    r1, r2 = single.data.metrics["best_val_rmse"], ddp.data.metrics["best_val_rmse"]
    assert abs(r1 - r2) < 0.05, (r1, r2)  # same model, half the steps of twice the examples: close, not equal
