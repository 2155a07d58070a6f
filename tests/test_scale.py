"""The training path whose cost follows the batch: row-wise table updates, the sampled softmax of a
catalogue scorer over shared negatives, and the rules that choose them on large catalogues."""

import numpy as np
import pytest
import torch

from recsys import config, scoring, training
from recsys.models import model_class
from recsys.errors import RecsysError
from recsys.models.fm import FM
from recsys.models.mf import MF
from recsys.models.sasrec import SASRec
from recsys.schema import LARGE_CATALOGUE, ROW_UPDATES_MIN_ROWS
from recsys.training import losses
from recsys.training.batches import POSITIVES, TensorBatches
from recsys.training.fit import resolve_updates
from recsys.training.optim import RowAdam, RowAdamW, use_row_updates

FAST = {"epochs": 3, "min_epochs": 3, "patience": 5, "batch_size": 128, "threads": 1}


def _mf(seed=0):
    torch.manual_seed(seed)
    return MF(30, 20, embedding_dim=4, init_std=0.1)


def _shared_batch(users, items, negatives, n_items=20):
    return {"user_id": torch.tensor(users), "item_id": torch.tensor(items), "negatives": torch.tensor(negatives),
            "log_q": torch.full((n_items,), -np.log(n_items), dtype=torch.float32)}


@pytest.mark.parametrize("optimizer", [RowAdam, RowAdamW])
def test_a_row_wise_step_changes_only_the_rows_its_batch_read(optimizer):
    model = _mf()
    use_row_updates(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = optimizer(model.parameters(), lr=0.1, weight_decay=0.5)  # decay, too, only where the batch read
    for _ in range(3):
        opt.zero_grad()
        losses.catalogue_sampled_softmax(model, _shared_batch([1, 2, 2], [3, 4, 5], [6, 7]), None).backward()
        assert model.user.weight.grad.is_sparse and model.item.weight.grad.is_sparse
        opt.step()
    after = model.state_dict()
    read = {"user.weight": [1, 2], "item.weight": [3, 4, 5, 6, 7], "item_bias.weight": [3, 4, 5, 6, 7],
            "user_bias.weight": []}  # the user bias cancels in a softmax over items: no gradient at all
    for key, rows in read.items():
        changed = (after[key] != before[key]).any(1).nonzero().flatten().tolist()
        assert changed == rows, key
    moments = opt.state[model.user.weight]["exp_avg"]
    assert (moments.abs().sum(1) > 0).nonzero().flatten().tolist() == [1, 2]


@pytest.mark.parametrize("optimizer,dense", [(RowAdam, torch.optim.Adam), (RowAdamW, torch.optim.AdamW)])
def test_row_wise_adam_is_dense_adam_when_every_batch_reads_every_row(optimizer, dense):
    a, b = _mf(), _mf()
    use_row_updates(a)
    opt_a, opt_b = optimizer(a.parameters(), lr=0.05, weight_decay=0.1), dense(b.parameters(), lr=0.05, weight_decay=0.1)
    users, items = torch.arange(30), torch.arange(30) % 20  # every user and every item in every batch
    for step in range(4):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            ((model(users, items) - torch.linspace(0, 1, 30)) ** 2).mean().backward()
            opt.step()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-6), k


def test_resuming_a_row_wise_sampled_softmax_run_continues_identically(implicit_data, tmp_path):
    over = {**FAST, "epochs": 4, "min_epochs": 4, "loss": "sampled_softmax", "num_negatives": 16, "updates": "rows",
            "lr": 0.01}
    hp, cfg = config.load("mf", overrides=over, task="implicit")
    whole = training.fit(implicit_data, "mf", hp, cfg, checkpoint_dir=tmp_path / "whole")
    assert whole.updates == "rows" and whole.loss == "sampled_softmax"
    _, half = config.load("mf", overrides={**over, "epochs": 2, "min_epochs": 2}, task="implicit")
    training.fit(implicit_data, "mf", hp, half, checkpoint_dir=tmp_path / "half")
    resumed = training.fit(implicit_data, "mf", hp, cfg, checkpoint_dir=tmp_path / "resumed",
                           resume_from=tmp_path / "half" / "last.ckpt")
    one = torch.load(tmp_path / "whole" / "last.ckpt", weights_only=True)
    two = torch.load(tmp_path / "resumed" / "last.ckpt", weights_only=True)
    assert one["epoch"] == two["epoch"] == 3 and one["global_step"] == two["global_step"]  # the 4th epoch (from 0)
    for key, value in one["state_dict"].items():
        assert torch.equal(value, two["state_dict"][key]), key
    state_one, state_two = one["optimizer_states"][0]["state"], two["optimizer_states"][0]["state"]
    assert state_one  # the row-wise moments are in the checkpoint
    for key in state_one:
        for name, value in state_one[key].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_two[key][name])), (key, name)


def test_mf_learns_with_the_shared_negative_sampled_softmax(implicit_data, tmp_path):
    hp, cfg = config.load("mf", overrides={**FAST, "epochs": 8, "min_epochs": 8, "loss": "sampled_softmax",
                                           "num_negatives": 32, "updates": "rows", "lr": 0.02}, task="implicit")
    r = training.fit(implicit_data, "mf", hp, cfg)
    batches = r.module.train_batches
    assert batches.kind == POSITIVES and batches.shared_negatives == 32
    b = next(iter(TensorBatches(batches.user, batches.item, batches.target, batch_size=10**6, seed=3,
                                n_items=implicit_data.n_items, kind=POSITIVES, shared_negatives=32,
                                popularity=np.bincount(batches.item.numpy(), minlength=implicit_data.n_items))))
    with torch.no_grad():  # the loss is the log-Q corrected cross-entropy against the shared items, by hand
        m = r.module.model
        pu = m.user(b["user_id"])
        logits = torch.cat([((pu * m.item(b["item_id"])).sum(1) + m.item_bias(b["item_id"]).squeeze(1)
                             - b["log_q"][b["item_id"]])[:, None],
                            pu @ m.item(b["negatives"]).T + m.item_bias(b["negatives"]).T - b["log_q"][b["negatives"]]], 1)
        logits[:, 1:][b["negatives"][None, :] == b["item_id"][:, None]] = -torch.inf
        manual = (torch.logsumexp(logits, 1) - logits[:, 0]).mean()
        loss = r.module.training_loss(b)
        flat = MF(implicit_data.n_users, implicit_data.n_items, embedding_dim=4, init_std=0.0)  # scores all equal
        uniform = losses.catalogue_sampled_softmax(flat, b, None)
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    assert loss.item() < uniform.item() - 0.2  # below a scorer that ranks every item alike: it learned
    assert r.best_score > 0.05  # validation NDCG@10 well above a random ranking's (~0.02 on 150 items)

    served = scoring.load_scorer(scoring.servable(r.checkpoint, tmp_path / "model.ckpt"))
    with torch.no_grad():
        assert torch.equal(served(b["user_id"], b["item_id"]), r.module(b["user_id"], b["item_id"]))


def test_shared_negatives_follow_the_training_popularity():
    pop = np.array([1000, 100, 10, 0])
    b = TensorBatches(np.zeros(4), np.arange(4), np.ones(4), batch_size=2, n_items=4, kind=POSITIVES,
                      shared_negatives=5000, popularity=pop)
    batches = list(b)
    assert len(batches) == 2 and all(x["negatives"].shape == (5000,) for x in batches)
    freq = np.bincount(torch.cat([x["negatives"] for x in batches]).numpy(), minlength=4) / 10000
    q = (pop + 1) / (pop + 1).sum()
    assert np.allclose(freq, q, atol=0.02)
    assert torch.allclose(batches[0]["log_q"], torch.log(torch.tensor(q, dtype=torch.float32)))


def test_large_catalogues_get_the_large_overlay_and_the_sampled_softmax():
    small_hp, small = config.load("mf", task="implicit", n_items=LARGE_CATALOGUE)
    big_hp, big = config.load("mf", task="implicit", n_items=LARGE_CATALOGUE + 1)
    assert small.loss == "softmax" and small.val_users == 0
    assert big.loss == "sampled_softmax" and big.val_users > 0 and big.batch_size > small.batch_size
    assert config.load("mf", task="rating", n_items=10**6)[1].batch_size > config.load("mf", task="rating")[1].batch_size
    assert config.load("mf", overrides={"batch_size": 512}, task="implicit", n_items=10**6)[1].batch_size == 512
    for name in ("sasrec", "gru4rec"):  # no threshold: their recipe follows the work (training/recipe.py)
        assert config.load(name, task="implicit", n_items=LARGE_CATALOGUE + 1)[1].loss == "auto"
    # auto: the same rule for a config that leaves the loss to it
    assert config.resolve_loss("auto", "implicit", MF, LARGE_CATALOGUE + 1) == "sampled_softmax"
    assert config.resolve_loss("auto", "implicit", MF, LARGE_CATALOGUE) == "bce"
    assert config.resolve_loss("auto", "implicit", SASRec, 10**6) == "softmax"  # at config time; fit decides
    assert config.resolve_loss("auto", "implicit", SASRec, 100) == "softmax"
    assert config.resolve_loss("auto", "implicit", FM, 10**6) == "bce"  # scores pairs: no catalogue to sample
    assert config.resolve_loss("auto", "rating", MF, 10**6) == "mse"


def test_row_updates_are_chosen_by_table_size_and_refused_across_processes():
    assert resolve_updates("auto", ROW_UPDATES_MIN_ROWS + 1, 1) == "rows"
    assert resolve_updates("auto", ROW_UPDATES_MIN_ROWS, 1) == "dense"
    assert resolve_updates("auto", 10**6, 2) == "dense"  # DDP all-reduces dense gradients
    assert resolve_updates("dense", 10**6, 1) == "dense"
    with pytest.raises(RecsysError, match="updates=rows trains in one process"):
        resolve_updates("rows", 10, 2)
    with pytest.raises(RecsysError, match="updates='sometimes': is not one of auto, dense, rows"):
        config.load("mf", overrides={"updates": "sometimes"})


TRAINABLE = [m for m in config.MODEL_NAMES if not model_class(m).closed_form]


@pytest.mark.parametrize("name, task", [(m, t) for m in TRAINABLE for t in ("rating", "implicit")
                                         if t == "implicit" or not model_class(m).uses_history])
def test_every_models_large_data_path_trains_on_tiny_data(name, task, monkeypatch, rating_data, implicit_data):
    """What ML-20M and larger get (the large: or large_rating: overlay, row-wise updates), forced on a
    150-item catalogue by lowering the threshold: every trainable model and task trains through it."""
    data = rating_data if task == "rating" else implicit_data
    shipped = config.load(name, task=task, n_items=LARGE_CATALOGUE + 1)[1]
    monkeypatch.setattr(config, "LARGE_CATALOGUE", data.n_items - 1)
    over = {"epochs": 1, "min_epochs": 1, "threads": 1, "updates": "rows",
            **({"num_negatives": 32} if shipped.num_negatives >= data.n_items else {})}
    hp, cfg = config.load(name, overrides=over, task=task, n_items=data.n_items)
    assert (cfg.batch_size, cfg.lr, cfg.val_users) == (shipped.batch_size, shipped.lr, shipped.val_users)
    sequence = model_class(name).uses_history  # their recipe follows the work, not the threshold
    assert cfg.batch_size >= 128 and (task == "rating" or sequence or cfg.val_users >= 2_000)
    result = training.fit(data, name, hp, cfg)
    assert result.updates == "rows" and np.isfinite(result.best_score)
    if task == "implicit" and model_class(name).scores_catalogue and not sequence:
        assert result.loss == "sampled_softmax"
