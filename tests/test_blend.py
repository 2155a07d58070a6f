"""The blend step: finished train runs combined with weights fitted on validation, logged, evaluated, served."""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from recsys import blend
from steps import blend as blend_step
from steps import evaluate as evaluate_step
from steps import prepare as prepare_step
from steps import report as report_step
from steps import train as train_step


def _last(step):
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.step = '{step}'",
                              order_by=["attributes.start_time DESC"], output_format="list")
    return runs[0]


def _trained(data, model, *extra):
    train_step.main(["--data", f"runs:/{data}/data", "--model", model, "--epochs", "3", "--min_epochs", "0", *extra])
    return _last("train").info.run_id


def test_ridge_weights_recover_a_known_combination_and_the_grid_is_the_simplex():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 1, (2000, 3))
    y = 0.6 * x[:, 0] + 0.4 * x[:, 2] + 0.5 + rng.normal(0, 0.01, 2000)
    w, b, alpha = blend.ridge_weights(x, y)
    assert np.allclose(w, [0.6, 0.0, 0.4], atol=0.01) and abs(b - 0.5) < 0.05 and alpha <= 1.0
    grid = list(blend.simplex_grid(3, 0.5))
    assert len(grid) == 6 and all(abs(g.sum() - 1) < 1e-12 and (g >= 0).all() for g in grid)
    z = blend.standardise(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    assert torch.allclose(z[0], torch.tensor([-1.0, 0.0, 1.0])) and torch.equal(z[1], torch.zeros(3))


def test_cross_fitted_weights_are_chosen_without_the_users_fold():
    folds = blend.user_folds(np.array([5, 1, 5, 3, 1, 9, 9, 3, 7]), 3)
    by_user = {}
    for u, f in zip([5, 1, 5, 3, 1, 9, 9, 3, 7], folds):
        assert by_user.setdefault(u, f) == f  # all of a user's rows in one fold
    found = {"weights": [0.0, 1.0], "members": [0.9, 0.95], "out_of_fold": 0.94}
    assert blend.verdict(found, "min").startswith("degenerate")
    assert blend.verdict({**found, "weights": [0.5, 0.5]}, "min") == "not better than its best member out of fold"
    assert blend.verdict({**found, "weights": [0.5, 0.5], "out_of_fold": 0.89}, "min") == ""


def test_rating_weights_are_never_negative_and_the_search_scales_gently_with_members():
    rng = np.random.default_rng(1)
    y = rng.normal(3.5, 1, 80)
    good, noise = y + rng.normal(0, 0.5, 80), rng.normal(3.5, 1, 80)
    x = np.stack([good, good + 0.9 * (noise - good), noise], 1)  # collinear members: OLS would subtract one
    w, _, _ = blend.ridge_weights(x, y)
    assert (w >= 0).all() and w[0] > 0
    calls = []

    def score(weights):  # the best blend is member 2 alone
        calls.append(weights)
        return -float(np.abs(weights - np.eye(10)[2]).sum())

    best, value = blend.greedy_simplex(10, score)
    assert np.allclose(best, np.eye(10)[2]) and value == 0.0
    assert len(calls) == 100 and all(abs(c.sum() - 1) < 1e-12 and (c >= 0).all() for c in calls)  # 10 x 10, not 11^9


@pytest.mark.parametrize("task", ["rating", "implicit"])
def test_a_blend_is_fitted_on_validation_logged_evaluated_and_served(ml100k_dir, task):
    extra = ["--task", "implicit", "--split", "leave_last_out", "--positive-threshold", "1",
                                                                  "--eval-negatives", "20"] if task == "implicit" else []
    prepare_step.main(["--dataset", str(ml100k_dir), *extra])
    data = _last("prepare").info.run_id
    members = [_trained(data, "mf"), _trained(data, "popularity")]
    blend_step.main(["--runs", ",".join(members)])
    run = _last("blend")
    assert run.info.status == "FINISHED" and run.data.tags["recsys.complete"] == "true"
    assert run.data.tags["model"] == "blend(mf+popularity)" and run.data.tags["blend.members"] == ",".join(members)
    key = "best_val_rmse" if task == "rating" else "best_val_ndcg_at_10"
    alone = [run.data.metrics[f"member_{key.removeprefix('best_')}.{m}.{r[:8]}"] for m, r in zip(("mf", "popularity"), members)]
    # validation decides the weights; each member alone is among the blends searched (implicit) or in reach (ridge)
    inside = run.data.metrics[key.replace("best_", "insample_")]
    assert (inside <= min(alone) + 1e-3) if task == "rating" else (inside >= max(alone) - 1e-12)
    # the evidence is out of fold, never better than the fit it comes from
    assert (run.data.metrics[key] >= inside - 1e-12) if task == "rating" else (run.data.metrics[key] <= inside + 1e-12)
    assert run.data.tags["blend.verdict"] and "oof_per_user.parquet" in {
        a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    evaluate_step.main(["--model-uri", f"runs:/{run.info.run_id}/model"])
    ev = _last("evaluate")
    metric = "test/rmse" if task == "rating" else "test/ndcg_at_10"
    assert ev.info.status == "FINISHED" and np.isfinite(ev.data.metrics[metric])
    assert ev.data.tags["train_run_id"] == run.info.run_id
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    out = served.predict(pd.DataFrame({"user": ["1", "2"]}), params={"k": 3})
    assert list(out["rank"]) == [1, 2, 3, 1, 2, 3]


def test_members_of_other_data_or_other_tasks_or_not_train_runs_are_refused(ml100k_dir, capsys):
    prepare_step.main(["--dataset", str(ml100k_dir), "--seed", "1"])
    first = _last("prepare").info.run_id
    prepare_step.main(["--dataset", str(ml100k_dir), "--seed", "2"])
    second = _last("prepare").info.run_id
    a, b = _trained(first, "mf"), _trained(second, "global_mean")
    for runs, match in ((f"{a},{b}", "trained on different data"), (a, "at least two finished train runs"),
                        (f"{a},{first}", f"run {first} is not a finished train run"),
                        (f"{a},{a}", f"run {a} is listed more than once")):
        with pytest.raises(SystemExit) as e:
            blend_step.main(["--runs", runs])
        err = capsys.readouterr().err
        assert e.value.code == 2 and [line for line in err.splitlines() if line.startswith("error:")] and match in err, err
        failed = mlflow.search_runs(search_all_experiments=True, order_by=["attributes.start_time DESC"],
                                    output_format="list")[0]
        assert "Traceback" not in err and failed.info.status == "FAILED" and match in failed.data.tags["error"]
        assert failed.data.tags["step"] == "blend"  # said when the run starts: a refused run is found by its step


def test_sequence_members_are_blended_from_the_history_before_validation_and_served(ml100k_dir):
    prepare_step.main(["--dataset", str(ml100k_dir), "--task", "implicit", "--split", "leave_last_out",
                       "--positive-threshold", "1", "--eval-negatives", "20"])
    data = _last("prepare").info.run_id
    small = ["--embedding_dim", "16", "--max_len", "12"]
    seq = {"sasrec": _trained(data, "sasrec", *small), "gru4rec": _trained(data, "gru4rec", "--max_len", "20")}
    runs = {"mf": _trained(data, "mf"), **seq}
    trained = {m: mlflow.get_run(r).data.metrics["best_val_ndcg_at_10"] for m, r in runs.items()}
    blend_step.main(["--runs", ",".join(runs.values())])
    run = _last("blend")
    assert run.info.status == "FINISHED" and run.data.tags["model"] == "blend(mf+sasrec+gru4rec)"
    # each member is scored on validation as its own training validated it: from the train items alone
    # (had the blend read the history its logged model serves from, val items would be in it)
    for m in runs:
        assert abs(run.data.metrics[f"member_val_ndcg_at_10.{m}.{runs[m][:8]}"] - trained[m]) < 1e-6, m
    assert run.data.metrics["insample_val_ndcg_at_10"] >= max(trained.values()) - 1e-12
    assert run.data.metrics["best_val_ndcg_at_10"] <= run.data.metrics["insample_val_ndcg_at_10"] + 1e-12
    evaluate_step.main(["--model-uri", f"runs:/{run.info.run_id}/model"])
    ev = _last("evaluate")
    assert ev.info.status == "FINISHED" and 0 < ev.data.metrics["test/ndcg_at_10"] < 1
    experiment = mlflow.get_experiment(ev.info.experiment_id).name
    report = report_step.main(["--experiment", experiment])
    md = Path(mlflow.artifacts.download_artifacts(run_id=report, artifact_path="report.md")).read_text()
    assert f"- blend(mf+sasrec+gru4rec) weights, fitted on validation: seed 42: {run.data.tags['blend.weights']}" in md
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    out = served.predict(pd.DataFrame({"user": ["1"]}), params={"k": 5})
    assert list(out["rank"]) == [1, 2, 3, 4, 5]
    with pytest.raises(Exception, match="recommend from the user id alone"):  # mf cannot read a history
        served.predict(pd.DataFrame({"user": ["1"], "history": [["1", "2"]]}), params={"k": 3})
    # a blend of sequence models answers a history: its items are not recommended back
    blend_step.main(["--runs", ",".join(seq.values())])
    both = mlflow.pyfunc.load_model(f"runs:/{_last('blend').info.run_id}/model")
    out = both.predict(pd.DataFrame({"user": ["new"], "history": [["1", "2", "3"]]}), params={"k": 5})
    assert len(out) == 5 and not set(out["item"]) & {"1", "2", "3"} and (out["fallback"] == "").all()


def test_the_rank_store_ranks_every_weighting_as_the_full_ranking_does_in_blocks_that_do_not_grow_with_the_catalogue():
    from recsys import metrics, ranking
    from recsys.blend_search import RankStore
    from recsys.models import build_model

    n_users, n_items, rng = 40, 300, np.random.default_rng(3)
    spec = lambda dim: {"model_name": "mf", "n_users": n_users, "n_items": n_items, "features": {},  # noqa: E731
                        "model_hparams": {"embedding_dim": dim, "init_std": 1.0}}
    b = build_model("blend", n_users, n_items, members=[spec(4), spec(8), spec(2)], weights=[1, 1, 1], bias=0.0,
                    task="implicit", rating_min=1.0, rating_max=5.0)
    b.members[2].item_bias.weight.data[::7] = 50.0  # ties among items: pessimistic ranks must agree too
    users = np.arange(n_users)
    targets = np.where(rng.random((n_users, 3)) < 0.7, rng.integers(0, n_items, (n_users, 3)), -1)
    targets[:, 0] = rng.integers(0, n_items, n_users)
    seen_u = rng.integers(0, n_users, 2000)
    seen_i = rng.integers(0, n_items, 2000)
    keep = ~np.isin(seen_i + seen_u * n_items, targets + users[:, None] * n_items)  # a target is never seen
    exclude = ranking.CSR.build(seen_u[keep], seen_i[keep], n_users)
    cold = rng.random(n_users) < 0.1
    popularity = torch.as_tensor(rng.random(n_items), dtype=torch.float32)
    store = RankStore(b, users, targets, exclude, n_items, k=10, cold=cold, fallback=popularity,
                      block_floats=3 * n_items * 7)  # blocks of 7 users
    assert store.diffs.shape[0] < n_users * 3 * n_items / 4  # only the contested items are kept
    for w in [np.eye(3)[0], np.eye(3)[2], np.array([0.2, 0.5, 0.3]), np.array([0.5, 0.0, 0.5])]:
        b.weights.copy_(torch.as_tensor(w, dtype=torch.float32))
        full = ranking.rank_targets(b, users, targets, exclude, n_items, fallback=popularity, cold=cold)[0]
        mine = store.ranks(w)
        near = full <= 10
        assert np.array_equal(mine[near], full[near]) and (mine[~near & np.isfinite(full)] > 10).all()
        assert np.allclose(store.ndcg_per_user(w), metrics.ndcg_per_user(full, 10))


def test_greedy_selection_returns_the_weights_of_its_best_step_not_its_last():
    from recsys.blend_search import greedy_simplex

    # member 0 alone scores best; every later step must add a share, and each lowers the score
    w, value = greedy_simplex(2, lambda w: 1.0 - abs(w[1] - 0.0) - 0.5 * abs(w[0] - 1.0), step=0.25)
    assert value == 1.0 and list(w) == [1.0, 0.0]


class _Store:
    """A rank store stand-in: each user's NDCG under weights w is a fixed function of w."""

    def __init__(self, prefers: np.ndarray):
        self.prefers, self.shape = prefers, (len(prefers), 1)

    def ndcg_per_user(self, w):
        return np.where(self.prefers == 0, w[0], w[1]) * np.where(self.prefers == 0, 10.0, 1.0)


def test_the_weights_a_held_fold_is_scored_with_never_see_that_fold():
    from recsys.blend_search import FOLDS, search_weights, user_folds

    users = np.arange(50)
    fold = user_folds(users, FOLDS, seed=0)
    held = fold == 0
    # the held fold's users want member 0 ten times as strongly as everyone else wants member 1: were
    # their rows seen, the weights would go to member 0
    prefers = np.where(held, 0, 1)
    _, _, oof = search_weights(_Store(prefers), 2, seed=0, users=users)
    assert np.allclose(oof[held], 0.0)  # scored with the others' choice (member 1 alone): 0 for them
    flipped = _Store(np.where(held, 1, 1))  # only the held fold's rows change
    _, _, again = search_weights(flipped, 2, seed=0, users=users)
    assert np.allclose(again[held], 1.0)  # the same weights (member 1), now scoring them 1
    _, inside, _ = search_weights(_Store(prefers), 2, seed=0, users=users)
    assert inside > 1.0  # in sample, the held fold's strong preference does move the weights


def test_the_rank_store_stays_under_its_cap_as_the_catalogue_grows_and_refuses_past_it():
    from recsys import ranking
    from recsys.blend_search import RankStore
    from recsys.errors import RecsysError
    from recsys.models import build_model

    sizes = []
    for n_items in (200, 800, 3200):
        spec = {"model_name": "mf", "n_users": 30, "n_items": n_items, "features": {},
                "model_hparams": {"embedding_dim": 4, "init_std": 1.0}}
        b = build_model("blend", 30, n_items, members=[spec, spec], weights=[1, 1], bias=0.0, task="implicit",
                        rating_min=1.0, rating_max=5.0)
        b.members[1].load_state_dict(b.members[0].state_dict())  # members that agree contest nothing
        with torch.no_grad():  # each user's target: member 0's best item (ahead of few, for it)
            targets = b.members[0].score_matrix(torch.arange(30)).argmax(1).numpy()[:, None]
        empty = ranking.CSR.build(np.zeros(0, np.int64), np.zeros(0, np.int64), 30)
        store = RankStore(b, np.arange(30), targets, empty, n_items, cap=4096)
        sizes.append(store.nbytes)
        torch.manual_seed(n_items)
        b.members[1].reset_parameters() if hasattr(b.members[1], "reset_parameters") else [
            p.data.normal_() for p in b.members[1].parameters()]
        with pytest.raises(RecsysError, match=r"disagree on too many items .* blend fewer members"):
            RankStore(b, np.arange(30), targets, empty, n_items, cap=4096)  # members that disagree: refused
    assert max(sizes) <= 4096 and len(set(sizes)) == 1  # the same bytes whatever the catalogue
