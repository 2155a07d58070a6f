"""What is known about a user before a split (recsys/data/known.py), and served = evaluated: a model served
from the tables of what evaluation knew answers every kind of user as evaluation ranks and predicts them."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from recsys import blend, config, evaluation, scoring, training
from recsys.data import known
from recsys.data import prepare as prep
from recsys.schema import ITEM, RAW_ID, USER
from recsys.serving import Bundle, export


@pytest.fixture(scope="module")
def temporal(raw):
    """One global cutoff: most test users have no training row (cold), 4 of them nothing before test."""
    return prep.prepare(raw, task="implicit", split="temporal", positive_threshold=1, seed=5, eval_negatives=10)


def _fit(data, name, tmp, **over):
    hp, cfg = config.load(name, task=data.meta["task"], overrides={"min_epochs": 0, "epochs": 2, **over})
    result = training.fit(data, name, hp, cfg, checkpoint_dir=tmp / name)
    return scoring.servable(result.checkpoint, tmp / f"{name}.ckpt")


def _as_of_test(data):
    """The data a served model would hold when test had not happened yet: what evaluation knows at test."""
    return dataclasses.replace(data, test=data.test.iloc[:0])


@pytest.fixture(scope="module")
def checkpoints(temporal, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("known")
    out = {name: _fit(temporal, name, tmp) for name in ("mf", "itemknn")}
    out["sasrec"] = _fit(temporal, "sasrec", tmp, max_len=10, embedding_dim=16)
    fitted, _ = blend.fit([scoring.load_scorer(out["mf"]), scoring.load_scorer(out["itemknn"])], temporal,
                          progress=lambda *a: None)
    torch.save(blend.checkpoint(fitted.model, temporal.n_users, temporal.n_items), tmp / "blend.ckpt")
    out["blend"] = tmp / "blend.ckpt"
    return out


def test_known_before_each_split_grows_in_recorded_order_and_cold_follows_what_the_model_reads(temporal):
    val, test, served = (known.before(temporal, s) for s in ("val", "test", None))
    for k, n in ((val, len(temporal.train)), (test, len(temporal.train) + len(temporal.val)), (served, None)):
        assert k.items.indptr[-1] == (n if n is not None else len(temporal.train) + len(temporal.val) + len(temporal.test))
    users = np.unique(temporal.test[USER].to_numpy())
    untrained = ~test.trained[users]
    empty = test.items.counts(users) == 0
    assert untrained.sum() > empty.sum() > 0  # users cold for mf that a history model can still score
    assert (test.cold(users, from_history=False) == untrained).all()
    assert (test.cold(users, from_history=True) == empty).all()
    assert test.cold(np.array([-1]), True).all() and test.cold(np.array([-1]), False).all()
    # the latest column of a history is the user's latest known item (the val item when they have one)
    last_val = temporal.val.sort_values("position").groupby(USER)[ITEM].last()
    h = test.histories(4)
    for u, i in last_val.items():
        assert h[u, -1] == i + 1


@pytest.mark.parametrize("name", ["mf", "sasrec", "itemknn", "blend"])
def test_the_served_top_k_of_every_kind_of_user_is_the_evaluated_ranking(temporal, checkpoints, tmp_path, name):
    ev = evaluation.evaluate(scoring.load_scorer(checkpoints[name]), temporal, "test", ks=(10,), protocol="full")
    bundle = Bundle(checkpoints[name], export(_as_of_test(temporal), tmp_path / "tables"))
    raw = temporal.users[RAW_ID].astype(str).to_numpy()
    out = bundle.recommend(list(raw[ev.users]), k=10)
    served = out.groupby("user", sort=False)["item"].apply(list)
    item_code = {r: c for c, r in enumerate(temporal.items[RAW_ID].astype(str))}
    kinds = known.before(temporal, "test")
    cold = kinds.cold(ev.users, bundle.module.model.answers_histories)
    assert cold.any() and (~cold).any()
    for row, u in enumerate(ev.users):
        assert [item_code[i] for i in served[raw[u]]] == list(ev.top_items[row]), (name, u, cold[row])
    flagged = out.groupby("user", sort=False)["fallback"].first().reindex(raw[ev.users]).to_numpy()
    assert ((flagged == "popularity") == cold).all()
    # an id the data does not hold, and (history models) an empty history: the ranking of a cold user
    # with nothing known, as evaluation ranks one
    nothing = np.flatnonzero(kinds.items.counts(ev.users) == 0)[0]
    unknown = bundle.recommend(["no-such-user"], k=10)
    assert [item_code[i] for i in unknown["item"]] == list(ev.top_items[nothing])
    if bundle.module.model.answers_histories:
        anon = bundle.recommend_from_histories(["anon"], [[]], 10)
        assert [item_code[i] for i in anon["item"]] == list(ev.top_items[nothing])


def test_the_served_rating_of_every_kind_of_pair_is_the_evaluated_prediction(raw, tmp_path):
    data = prep.prepare(raw, task="rating", split="temporal", seed=5)
    ckpt = _fit(data, "mf", tmp_path)
    ev = evaluation.evaluate(scoring.load_scorer(ckpt), data, "test")
    assert ev.predictions["cold"].any() and (~ev.predictions["cold"]).any()
    bundle = Bundle(ckpt, export(_as_of_test(data), tmp_path / "tables"))
    users = data.users[RAW_ID].astype(str).to_numpy()[ev.predictions[USER]]
    items = data.items[RAW_ID].astype(str).to_numpy()[ev.predictions[ITEM]]
    served = bundle.predict_pairs(list(users), list(items))
    np.testing.assert_allclose(served["score"].to_numpy(), ev.predictions["predicted"].to_numpy(), rtol=1e-6)
    assert ((served["fallback"] != "") == ev.predictions["cold"].to_numpy()).all()
    # a cold user's pair is its item's damped mean, as evaluated; an unknown one the same
    cold_row = np.flatnonzero(ev.predictions["cold"].to_numpy())[0]
    again = bundle.predict_pairs(["no-such-user"], [items[cold_row]])
    assert again["score"].iloc[0] == pytest.approx(known.before(data, "test").item_mean[ev.predictions[ITEM].iloc[cold_row]])


def test_training_validates_a_rating_model_with_the_figure_evaluate_gives_it(raw, tmp_path):
    """One validation figure per model: the RMSE training prints and early-stops on gives a cold pair the
    cold-start answer evaluate gives it (on a temporal split many validation pairs are cold)."""
    data = prep.prepare(raw, task="rating", split="temporal", seed=5)
    hp, cfg = config.load("mf", task="rating", overrides={"min_epochs": 0, "epochs": 2})
    result = training.fit(data, "mf", hp, cfg, checkpoint_dir=tmp_path / "mf")
    ev = evaluation.evaluate(result.module, data, "val")
    assert ev.metrics["val/n_cold_rows"] > 0
    assert result.best_score == pytest.approx(ev.metrics["val/rmse"], rel=1e-5)


def test_an_item_item_model_scores_a_test_user_from_their_validation_item_too(implicit_data, tmp_path):
    model = scoring.load_scorer(_fit(implicit_data, "itemknn", tmp_path)).model
    user = int(implicit_data.val[USER].iloc[0])

    def scores(data):
        model.set_known(known.before(data, "test"))
        return model.score_matrix(torch.tensor([user]))[0]

    before = scores(implicit_data)
    val = implicit_data.val.copy()
    had = set(known.before(implicit_data, "test").items.indices[
        known.before(implicit_data, "test").items.indptr[user]:known.before(implicit_data, "test").items.indptr[user + 1]])
    other = next(i for i in range(implicit_data.n_items) if i not in had)
    val.loc[val[USER] == user, ITEM] = other  # only this user's validation item changes
    after = scores(dataclasses.replace(implicit_data, val=val))
    assert not torch.equal(before, after)
    model.set_known(known.before(implicit_data, "val"))  # validation reads train only: the val item is not in it
    assert not torch.equal(model.score_matrix(torch.tensor([user]))[0], before)
    assert pd.Series(known.before(implicit_data, "val").items.counts(np.array([user]))).iloc[0] < len(had)
