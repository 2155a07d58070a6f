"""Sequence models (sasrec, gru4rec): the recorded history order, causal encoders, next-item training
that never sees val or test, a planted sequential pattern only they can learn, and served histories."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from recsys import config, evaluation, training
from recsys.data import history, parsers
from recsys.data import prepare as prep
from recsys.errors import RecsysError
from recsys.models import build_model
from recsys.schema import ITEM, POSITION, RATING, TIMESTAMP, USER

SEQUENCE_MODELS = ("sasrec", "gru4rec")


def _runs(n_users=160, n_items=60, runs=8, run_len=3, seed=0) -> parsers.Raw:
    """Each user watches `runs` short runs of consecutive items (s, s + 1, s + 2) from random starts, one
    item a day, no item twice. Which item comes next is plain from the last one; from the set of items
    alone it is not: every run's two ends have unseen neighbours, and every item is about as popular."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        starts, taken = [], set()
        while len(starts) < runs:
            s = int(rng.integers(n_items))
            span = {(s + j) % n_items for j in range(run_len)}
            if not span & taken:
                starts.append(s)
                taken |= span
        t = 0
        for s in starts:
            for j in range(run_len):
                rows.append((str(u), str((s + j) % n_items), 5.0, 1_000_000 + 86_400 * t))
                t += 1
    return parsers.Raw(pd.DataFrame(rows, columns=[USER, ITEM, RATING, TIMESTAMP]))


@pytest.fixture(scope="module")
def runs():
    return prep.prepare(_runs(), task="implicit", split="leave_last_out", positive_threshold=1, seed=3,
                        eval_negatives=10)


def test_prepare_records_each_history_in_the_order_that_picked_val_and_test(runs):
    parts = {s: runs.split(s) for s in ("train", "val", "test")}
    for user, rows in pd.concat(parts.values(), keys=parts.keys()).reset_index(level=0).groupby(USER):
        rows = rows.sort_values(POSITION)
        assert list(rows[POSITION]) == list(range(len(rows)))  # 0..n-1, once each
        assert list(rows["level_0"].iloc[-2:]) == ["val", "test"]  # the latest two were held out
        assert rows[TIMESTAMP].is_monotonic_increasing
    # equal timestamps are ordered by the tie rule, the same one the split used
    df = pd.DataFrame({USER: ["a"] * 4, ITEM: ["1", "2", "3", "4"], RATING: [5.0] * 4, TIMESTAMP: [7, 7, 7, 9]})
    d = prep.prepare(parsers.Raw(df), task="implicit", split="leave_last_out", positive_threshold=1,
                     tie_break="item_id", seed=1, eval_negatives=0)
    allrows = pd.concat([d.train, d.val, d.test]).sort_values(POSITION)
    assert list(d.items["raw_id"].to_numpy()[allrows[ITEM]]) == ["1", "2", "3", "4"]


def test_training_windows_hold_train_items_only_and_every_one_after_the_first(runs):
    seq, nxt, owners = history.windows(runs.train, max_len=5)
    held = set(zip(runs.val[USER], runs.val[ITEM] + 1)) | set(zip(runs.test[USER], runs.test[ITEM] + 1))
    for w in range(len(seq)):
        u = int(owners[w])
        for item in set(seq[w].tolist()) | set(nxt[w].tolist()):
            assert item == 0 or (u, item) not in held
    counts = runs.train.groupby(USER).size()
    assert int((nxt > 0).sum()) == int((counts - 1).clip(lower=0).sum())  # each target exactly once
    # a target is the item that followed its input in the user's recorded order
    order = runs.train.sort_values([USER, POSITION])
    follows = {(u, a + 1): b + 1 for u, g in order.groupby(USER) for a, b in zip(g[ITEM].iloc[:-1], g[ITEM].iloc[1:])}
    has = nxt > 0
    for w, col in zip(*np.nonzero(has.numpy())):
        assert follows[(int(owners[w]), int(seq[w, col]))] == int(nxt[w, col])


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_the_state_at_a_position_never_reads_later_items(name):
    torch.manual_seed(0)
    model = build_model(name, 4, 30, embedding_dim=16, max_len=8, dropout=0.0).eval()
    seq = torch.tensor([[0, 0, 3, 5, 7, 9, 11, 13]])
    later = seq.clone()
    later[0, 5:] = torch.tensor([21, 22, 23])
    with torch.no_grad():
        a, b = model.encode(seq), model.encode(later)
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6) and not torch.allclose(a[0, 5:], b[0, 5:])


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_a_planted_order_is_learnt_by_sequence_models_and_not_by_order_blind_ones(runs, name):
    def ndcg(model, **over):
        hp, cfg = config.load(model, task="implicit", overrides={"min_epochs": 0, "patience": 3, **over})
        result = training.fit(runs, model, hp, cfg)
        return evaluation.evaluate(result.module, runs, "test", [10], "full").metrics["test/ndcg_at_10"]

    seq = ndcg(name, epochs=25, lr=0.01, embedding_dim=32, max_len=10)
    blind = {m: ndcg(m, epochs=10) for m in ("mf", "popularity")}
    assert seq > 0.8 and all(seq > v + 0.5 for v in blind.values()), (seq, blind)


@pytest.mark.parametrize("loss", ["sampled_softmax", "bce"])
def test_the_other_losses_train_too(runs, loss):
    hp, cfg = config.load("gru4rec", task="implicit", overrides={"loss": loss, "epochs": 2, "min_epochs": 0,
                                                                  "num_negatives": 16, "max_len": 10})
    result = training.fit(runs, "gru4rec", hp, cfg)
    assert np.isfinite(result.best_score)


def test_exclude_seen_leaves_out_of_each_softmax_exactly_what_the_user_had_before_its_target():
    from recsys.training.batches import SequenceBatches
    from recsys.training.losses import seen_before, sequence_bce, sequence_softmax

    rng = np.random.default_rng(1)
    rows = [(u, int(it), pos) for u in range(6) for pos, it in enumerate(rng.integers(0, 9, size=3 + 4 * u))]
    train = pd.DataFrame(rows, columns=[USER, ITEM, POSITION])  # repeats included: an item had twice
    max_len, n_items = 3, 9
    seq, nxt, owners = history.windows(train, max_len)  # several windows per user: items before a window count
    batches = SequenceBatches(seq, nxt, owners, batch_size=4, n_items=n_items, seen=history.seen(train, max_len))
    model = build_model("gru4rec", 6, n_items, embedding_dim=8, max_len=max_len, dropout=0.0)
    order = {u: g.sort_values(POSITION)[ITEM].tolist() for u, g in train.groupby(USER)}
    checked = repeats = 0
    for batch in batches:
        target = batch["next"][batch["next"] > 0] - 1
        mask = seen_before(batch, target, torch.arange(n_items))
        for p, (w, col) in enumerate(zip(*np.nonzero((batch["next"] > 0).numpy()))):
            items = order[int(batch["user_id"][w])]
            place = int(batch["place"][w, col])
            assert items[place] == int(target[p])  # the place is the target's own
            had = set(items[:place]) - {items[place]}  # the target stays: a repeat is still the answer
            repeats += items[place] in items[:place]
            assert set(np.nonzero(mask[p].numpy())[0]) == had, (w, col)
            checked += 1
        h = model.encode(batch["seq"])[batch["next"] > 0]
        logits = h @ model.catalogue().T
        by_hand = torch.stack([torch.logsumexp(logits[p][~mask[p]], 0) - logits[p, target[p]]
                               for p in range(len(target))]).mean()
        assert torch.allclose(sequence_softmax(model, batch, None), by_hand, atol=1e-5)
        assert not torch.allclose(sequence_softmax(model, {"seq": batch["seq"], "next": batch["next"]}, None), by_hand)
        some = torch.tensor([0, 2, 3, 7])  # shared negatives (sampled softmax): the same rule, on their columns
        assert torch.equal(seen_before(batch, target, some), mask[:, some])
        # bce: an input item drawn as a position's negative was had before it: no negative, unless it is the target
        drawn = {**batch, "neg_next": batch["seq"].clamp(min=1)}
        has = batch["next"] > 0
        h = model.encode(batch["seq"])
        pos = (h * model.item(batch["next"])).sum(-1)[has]
        kept = has & (drawn["neg_next"] == batch["next"])
        neg = (h * model.item(drawn["neg_next"])).sum(-1)[kept]
        by_hand = torch.nn.functional.binary_cross_entropy_with_logits(
            torch.cat([pos, neg]), torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))
        assert torch.allclose(sequence_bce(model, drawn, None), by_hand, atol=1e-6)
    assert checked == int((train.groupby(USER).size() - 1).sum()) and repeats > 0


@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax", "bce"])
def test_exclude_seen_trains_with_every_sequence_loss(runs, loss):
    hp, cfg = config.load("sasrec", task="implicit", n_items=runs.n_items, overrides={
        "exclude_seen": "true", "loss": loss, "num_negatives": 16, "epochs": 2, "min_epochs": 0, "max_len": 10})
    assert cfg.exclude_seen is True
    assert np.isfinite(training.fit(runs, "sasrec", hp, cfg).best_score)


def test_exclude_seen_is_refused_for_a_model_that_reads_no_history_in_one_line(runs):
    for name in ("mf", "ncf"):
        with pytest.raises(RecsysError, match=r"exclude_seen=true leaves .* set exclude_seen=false for " + name):
            config.load(name, task="implicit", n_items=runs.n_items, overrides={"exclude_seen": "true"})


def test_sequence_models_refuse_ratings_and_pair_losses(runs):
    rating = prep.prepare(_runs(n_users=20), task="rating", split="leave_last_out", seed=3)
    hp, cfg = config.load("sasrec", task="rating")
    with pytest.raises(RecsysError, match="needs task=implicit"):
        training.fit(rating, "sasrec", hp, cfg)
    hp, cfg = config.load("sasrec", task="implicit", overrides={"loss": "bpr"})
    with pytest.raises(RecsysError, match="does not train a sequence model"):
        training.fit(runs, "sasrec", hp, cfg)


@pytest.fixture(scope="module")
def served(runs, tmp_path_factory):
    """gru4rec trained on the planted runs, exported as the served model is (every known item in each
    user's history), beside an mf bundle."""
    from recsys import scoring, serving

    out = {}
    folder = tmp_path_factory.mktemp("seq-serving")
    tables = serving.export(runs, folder / "tables")
    for name, over in (("gru4rec", {"epochs": 25, "lr": 0.01, "embedding_dim": 32, "max_len": 10}), ("mf", {"epochs": 2})):
        hp, cfg = config.load(name, task="implicit", overrides={"min_epochs": 0, **over})
        result = training.fit(runs, name, hp, cfg, checkpoint_dir=folder / name)
        out[name] = serving.Bundle(scoring.servable(result.checkpoint, folder / f"{name}.ckpt"), tables)
    return out


def _raw(data, codes):
    return [str(data.items["raw_id"].iloc[c]) for c in codes]


def test_a_served_history_is_read_in_order_and_its_items_are_not_recommended(runs, served):
    b = served["gru4rec"]  # a run 10, 11 -> 12 comes next
    hist = _raw(runs, [b.tables.item_index.get_loc("10"), b.tables.item_index.get_loc("11")])
    out = b.predict(pd.DataFrame({"user": ["anonymous"], "history": [hist]}), 5)
    assert list(out["item"])[0] == "12" and not set(out["item"]) & set(hist)
    assert (out["fallback"] == "").all() and (out["history_dropped"] == 0).all() and list(out["rank"]) == [1, 2, 3, 4, 5]
    # unknown ids are dropped and counted; most recent last: 40, 41 -> 42 whatever came before
    out = b.predict(pd.DataFrame({"user": ["a"], "history": [["no-such", "10", "11", "40", "41"]]}), 3)
    assert list(out["item"])[0] == "42" and (out["history_dropped"] == 1).all()
    # nothing known in it: the popularity ranking, flagged
    out = b.predict(pd.DataFrame({"user": ["a"], "history": [["no-such"]]}), 3)
    assert (out["fallback"] == "popularity").all() and (out["history_dropped"] == 1).all()
    # a known user without a history is answered from all that is known of them
    user = str(runs.users["raw_id"].iloc[int(runs.test[USER].iloc[0])])
    known = b.predict(pd.DataFrame({"user": [user]}), 5)
    seen = set(_raw(runs, pd.concat([runs.train, runs.val, runs.test]).query(f"{USER} == {int(runs.test[USER].iloc[0])}")[ITEM]))
    assert len(known) == 5 and not set(known["item"]) & seen
    # JSON-safe: numbers and nulls only
    json.dumps(out.to_dict(orient="records"), allow_nan=False)


@pytest.mark.parametrize("history, message", [
    ({"a": 1}, "`history` in row 0 is a dict, not a list of item ids"),
    (True, "`history` in row 0 is a bool, not a list of item ids"),
    ([[1, 2]], "`history` in row 0 holds [1, 2], not an item id"),
    ([1.5], "`history` in row 0 holds 1.5, not an item id"),
])
def test_a_bad_history_is_one_line(served, history, message):
    with pytest.raises(RecsysError) as e:
        served["gru4rec"].predict(pd.DataFrame({"user": ["a"], "history": [history]}), 3)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_one_item_history_is_a_history_whether_a_list_a_number_or_a_csv_cell(served):
    b = served["gru4rec"]
    as_list = b.predict(pd.DataFrame({"user": ["a"], "history": [["10"]]}), 5)
    for one in (10, 10.0, "10"):  # a CSV body `user,history\nnew,10` reaches the model as the number 10
        out = b.predict(pd.DataFrame({"user": ["a"], "history": [one]}), 5)
        assert list(out["item"]) == list(as_list["item"]) and (out["fallback"] == "").all()


def test_rows_of_only_a_history_are_anonymous_sessions(served):
    b = served["gru4rec"]
    out = b.predict(pd.DataFrame({"history": [["10", "11"], ["40", "41"]]}), 3)
    assert list(out.groupby("rank").get_group(1)["item"]) == ["12", "42"] and (out["user"] == "").all()
    with pytest.raises(RecsysError, match="`history` is null in row 1 and the input has no `user`"):
        b.predict(pd.DataFrame({"history": [["10"], None]}), 3)


def test_a_model_that_ignores_order_refuses_a_history(served):
    with pytest.raises(RecsysError, match="`history` is read by the sequence and item-item models"):
        served["mf"].predict(pd.DataFrame({"user": ["a"], "history": [["1", "2"]]}), 3)


@pytest.mark.slow
def test_a_history_request_over_real_http(tmp_path, empty_store, monkeypatch):
    import os
    import shutil
    import subprocess
    import sys
    import urllib.request

    import mlflow

    from steps import prepare as prepare_step
    from steps import train as train_step
    from support import free_port, wait_for

    db = tmp_path / "mlflow.db"
    shutil.copy(empty_store, db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    _runs().interactions.to_csv(tmp_path / "runs.csv", index=False)
    data = prepare_step.main(["--dataset", str(tmp_path / "runs.csv"), "--task", "implicit", "--split", "leave_last_out",
                              "--positive-threshold", "1", "--eval-negatives", "10"])
    train = train_step.main(["--data", f"runs:/{data}/data", "--model", "gru4rec", "--epochs", "25", "--min_epochs", "0",
                             "--lr", "0.01", "--embedding_dim", "32", "--max_len", "10"])
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{train}/model", "-h",
                               "127.0.0.1", "-p", str(port), "--env-manager", "local"], cwd=tmp_path,
                              env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def post(body):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        wait_for(f"http://127.0.0.1:{port}/ping", 180)
        status, body = post({"dataframe_records": [{"user": "anon", "history": ["10", "11"]}], "params": {"k": 3}})
        assert status == 200 and body["predictions"][0]["item"] == "12", body
        status, body = post({"dataframe_records": [{"user": "anon", "history": {"a": 1}}]})
        assert status == 400 and "`history` in row 0" in body["message"] and "\n" not in body["message"], body
        status, body = post({"dataframe_records": [{"user": "anon", "history": ["10", "11"]}], "params": {"k": 3}})
        assert status == 200  # still answering
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_recommend_reads_histories_from_a_users_file(served, tmp_path):
    from steps.recommend import read_users

    (tmp_path / "u.csv").write_text("user,history\nanon,10 11\nother,40 41\n")
    given = read_users(str(tmp_path / "u.csv"))
    recs = served["gru4rec"].predict(given[["user", "history"]], 3)
    assert list(recs.groupby("user", sort=False)["item"].first()) == ["12", "42"]
    with pytest.raises(RecsysError, match="`history` is read by the sequence and item-item models"):
        served["mf"].predict(given[["user", "history"]], 3)


def test_the_chunked_catalogue_softmax_equals_the_whole_one_in_value_and_gradient(monkeypatch):
    from recsys.training import fused

    monkeypatch.setattr(fused, "LOGIT_CHUNK", 7 * 11)  # chunks of 7 positions over 11 items: many chunks
    g = torch.Generator().manual_seed(0)
    h = torch.randn(30, 5, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 11, (30,), generator=g)
    rows = torch.tensor([0, 0, 3, 8, 8, 8, 29])  # left out of those positions' softmax (sorted by position)
    items = torch.tensor([1, 2, 5, 0, 4, 9, 10])
    items = torch.where(items == target[rows], (items + 1) % 11, items)  # never the target itself
    mine = fused.cross_entropy(h, table, target, rows, items)
    mine.backward()
    got = (h.grad.clone(), table.grad.clone())
    h.grad = table.grad = None
    logits = (h @ table.T).index_put((rows, items), torch.tensor(float("-inf"), dtype=torch.float64))
    whole = torch.nn.functional.cross_entropy(logits, target)
    whole.backward()
    assert torch.allclose(mine, whole) and torch.allclose(got[0], h.grad) and torch.allclose(got[1], table.grad)


def test_the_fused_sampled_softmax_equals_the_plain_one_in_value_and_gradient(monkeypatch):
    """Shared negatives through the fused pass (log-Q corrected, the target's own column and each position's
    seen items left out) against the plain [P, 1 + N] cross-entropy, for a sequence model and for mf."""
    from recsys.training import fused, losses
    from recsys.training.batches import SequenceBatches

    monkeypatch.setattr(fused, "LOGIT_CHUNK", 5 * 6)  # chunks of 5 positions over 6 negatives: many chunks
    rng = np.random.default_rng(3)
    rows = [(u, int(it), p) for u in range(6) for p, it in enumerate(rng.integers(0, 9, size=3 + 4 * u))]
    train = pd.DataFrame(rows, columns=[USER, ITEM, POSITION])
    seq, nxt, owners = history.windows(train, 3)
    batches = SequenceBatches(seq, nxt, owners, batch_size=4, n_items=9, seen=history.seen(train, 3))
    model = build_model("sasrec", 6, 9, embedding_dim=8, max_len=3, dropout=0.0).double()
    neg = torch.tensor([0, 2, 2, 5, 7, 8])  # repeats allowed
    log_q = torch.log(torch.linspace(0.05, 0.2, 9, dtype=torch.float64))
    for batch in batches:
        batch = {**batch, "negatives": neg, "log_q": log_q}
        mine = losses.sequence_sampled_softmax(model, batch, None)
        mine.backward()
        got = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad(set_to_none=True)
        h, target = losses._positions(model, batch)
        pos = (h * model.item(target + 1)).sum(-1) - log_q[target]
        negs = h @ model.item(neg + 1).T - log_q[neg][None, :]
        masked = losses.seen_before(batch, target, neg) | (neg[None, :] == target[:, None])
        plain = torch.nn.functional.cross_entropy(torch.cat([pos[:, None], negs.masked_fill(masked, float("-inf"))], 1),
                                                  torch.zeros(len(h), dtype=torch.long))
        plain.backward()
        want = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.allclose(mine, plain) and all(torch.allclose(a, b) for a, b in zip(got, want))
        model.zero_grad(set_to_none=True)
    mf = build_model("mf", 6, 9, embedding_dim=8).double()
    batch = {"user_id": torch.tensor([0, 1, 2, 3, 4, 5, 1]), "item_id": torch.tensor([0, 2, 8, 5, 5, 1, 3]),
             "negatives": neg, "log_q": log_q}
    mine = losses.catalogue_sampled_softmax(mf, batch, None)
    mine.backward()
    got = [None if p.grad is None else p.grad.clone() for p in mf.parameters()]
    mf.zero_grad(set_to_none=True)
    u, i = mf.user(batch["user_id"]), batch["item_id"]
    pos = (u * mf.item(i)).sum(-1) + mf.item_bias(i).squeeze(-1) - log_q[i]
    negs = (u @ mf.item(neg).T + mf.item_bias(neg).squeeze(-1)[None, :] - log_q[neg][None, :])
    plain = torch.nn.functional.cross_entropy(torch.cat([pos[:, None], negs.masked_fill(neg[None, :] == i[:, None],
                                                                                      float("-inf"))], 1),
                                              torch.zeros(len(i), dtype=torch.long))
    plain.backward()
    assert torch.allclose(mine, plain) and all(a is None and p.grad is None or torch.allclose(a, p.grad) for a, p in zip(got, mf.parameters()))


def test_the_recipe_follows_the_work_full_softmax_where_it_fits_sampled_where_it_does_not():
    from recsys.training.recipe import choose

    from recsys.models.gru4rec import GRU4Rec
    from recsys.models.sasrec import SASRec

    enc = SASRec.position_flops()  # 2 blocks, width 64, 50 positions: 0.37 MFLOP a position
    # the Video Games set's shape: 6 x 194,292 positions x 23,715 items x 64 = 1.77 TFLOP, the encoder 0.07
    for cls in (SASRec, GRU4Rec):
        video = choose("auto", 256, 0, 10, 5, 1.9, 194_292, 23_715, 31_013, 64, 244, cls.position_flops())
        assert video.loss == "softmax" and "1.77 TFLOP" in video.why
        # validating a user costs its state (50 positions forward) and the ranking: over a tenth of the
        # budget for all 31,013, so a sample that fits; the ranking alone would fit all of them
        per_user = 2 * 23_715 * 64 + 50 * cls.position_flops() / 3
        assert video.val_users == int(0.19e12 // per_user) and 15_000 < video.val_users < 31_013
        assert choose("auto", 256, 0, 10, 5, 1.9, 194_292, 23_715, 31_013, 64, 244).val_users == 0
        assert (video.min_epochs, video.patience) == (5, 3)  # epochs of 244 steps count for 2.44 of 100
    # the fifth of ML-25M: 2.6M positions; the encoder's 0.97 TFLOP leaves room for 512 shared negatives
    fifth = choose("auto", 256, 0, 10, 5, 1.9, 2_599_686, 24_975, 32_487, 64, 537, enc)
    assert fifth.loss == "sampled_softmax" and fifth.num_negatives == 512 and "0.97" in fifth.why
    assert choose("auto", 256, 0, 10, 5, 1.9, 2_599_686, 24_975, 32_487, 64, 537).num_negatives == 1024  # uncounted
    # ML-25M's shape: 25M positions, 59,047 items: the encoder alone is over the budget: the floor, 256
    ml25m = choose("auto", 256, 0, 10, 5, 1.9, 24_838_000, 59_047, 162_541, 64, 200_000, enc)
    assert ml25m.loss == "sampled_softmax" and ml25m.num_negatives == 256 and 0 < ml25m.val_users < 162_541
    assert (ml25m.min_epochs, ml25m.patience) == (1, 2)
    # the budget moves the choice: about half of it samples on Video, with as many negatives as fit
    tight = choose("auto", 256, 0, 10, 5, 1.0, 194_292, 23_715, 31_013, 64, 244, enc)
    assert tight.loss == "sampled_softmax" and tight.num_negatives == 8192
    assert 6 * 194_292 * 8192 * 64 <= 1e12 - 194_292 * enc < 6 * 194_292 * 16384 * 64
    # ML-100K keeps its configured schedule; an asked loss is kept with its negatives
    small = choose("bce", 100, 0, 10, 5, 3.0, 90_000, 1_682, 943, 64, 20)
    assert (small.loss, small.num_negatives, small.min_epochs, small.patience) == ("bce", 100, 10, 5)


def test_a_sequence_model_on_small_data_trains_the_full_softmax_and_records_why(runs):
    hp, cfg = config.load("sasrec", task="implicit", overrides={"epochs": 1, "min_epochs": 0, "max_len": 5})
    assert cfg.loss == "auto"
    result = training.fit(runs, "sasrec", hp, cfg, epoch_lines=True)
    assert result.loss == "softmax" and result.recipe.loss == "softmax"
    assert result.recipe.why.startswith("full softmax:") and "within the 1.9 TFLOP budget" in result.recipe.why
    hp, cfg = config.load("sasrec", task="implicit", overrides={"epochs": 1, "min_epochs": 0, "max_len": 5,
                                                                "epoch_tflop": 1e-9})
    result = training.fit(runs, "sasrec", hp, cfg)
    assert result.loss == "sampled_softmax" and result.recipe.num_negatives == runs.n_items // 2


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_sequence_batches_drop_padded_columns_and_the_states_do_not_change(runs, name):
    """SASRec masks its padding; GRU4Rec packs each window to its own items: either way a window's states
    are the same at any padding, so a batch drops its padded columns (and a GRU pays only for items)."""
    from recsys.training.batches import SequenceBatches

    seq, nxt, owners = history.windows(runs.train, max_len=12)
    model = build_model(name, runs.n_users, runs.n_items, embedding_dim=8, max_len=12, dropout=0.0).eval()
    assert model.pads_inertly
    batches = SequenceBatches(seq, nxt, owners, batch_size=3, trim=True, seen=history.seen(runs.train, 12))
    seen, widths = [], set()
    for b in batches:
        keep = b["seq"].shape[1]
        widths.add(keep)
        assert (b["next"] > 0).sum(1).max() == keep and b["place"].shape == b["seq"].shape
        full = torch.nn.functional.pad(b["seq"], (12 - keep, 0))  # the same windows at max_len
        has = b["next"] > 0
        assert torch.allclose(model.encode(b["seq"])[has], model.encode(full)[:, -keep:][has], atol=1e-5)
        seen += b["user_id"].tolist()
    assert sorted(seen) == sorted(owners.tolist()) and len(widths) > 1  # every window once, at several widths


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_scoring_reads_histories_grouped_by_length_with_the_same_states(runs, name, monkeypatch):
    """Ranking encodes each user's history once: grouped by length and cut to the group's longest, which
    changes no state of a user with a history (their padding is inert)."""
    from recsys.models import _sequence

    monkeypatch.setattr(_sequence, "STATE_ROWS", 5)  # many groups of different widths
    model = build_model(name, runs.n_users, runs.n_items, embedding_dim=8, max_len=12, dropout=0.0).eval()
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 13, (23,), generator=g)
    seq = torch.zeros(23, 12, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        seq[row, -n:] = torch.randint(1, runs.n_items + 1, (n,), generator=g)
    with torch.no_grad():
        assert torch.allclose(model.state(seq), model.encode(seq)[:, -1], atol=1e-5)
