from types import SimpleNamespace

import numpy as np
import torch

from recsys import metrics, ranking
from recsys.models.base import Model
from recsys.models.mf import MF


class Constant(Model):
    def forward(self, user, item):
        return torch.zeros(len(user))


class Random(Model):
    def __init__(self, n_users=200):
        super().__init__()
        self.register_buffer("table", torch.rand(n_users, 300, generator=torch.Generator().manual_seed(0)))

    def forward(self, user, item):
        return self.table[user, item]


def test_csr_pairs_and_padding():
    csr = ranking.CSR.build(np.array([0, 2, 2, 0, 2]), np.array([5, 1, 3, 4, 2]), 3)
    rows, items = csr.pairs(np.array([2, 1, 0]))
    assert rows.tolist() == [0, 0, 0, 2, 2] and items.tolist() == [1, 2, 3, 4, 5]
    assert csr.padded(np.array([0, 1])).tolist() == [[4, 5], [-1, -1]]


def test_blocked_ranks_match_a_naive_per_user_loop():
    torch.manual_seed(0)
    model = MF(40, 60, 8, init_std=0.5)
    rng = np.random.default_rng(0)
    tu, ti = rng.integers(0, 40, 400), rng.integers(0, 60, 400)
    exclude = ranking.CSR.build(tu, ti, 40)
    users = np.arange(40)
    targets = rng.integers(0, 60, (40, 1))
    ranks, tops = ranking.rank_targets(model, users, targets, exclude, 60, k=5)
    for u in users:
        with torch.no_grad():
            s = model(torch.full((60,), u), torch.arange(60)).numpy()
        seen = set(ti[tu == u])
        cand = [i for i in range(60) if i not in seen or i == targets[u, 0]]
        if targets[u, 0] in seen:
            continue  # a seen target is masked like any seen item
        expected = 1 + sum(s[i] >= s[targets[u, 0]] for i in cand if i != targets[u, 0])
        assert ranks[u, 0] == expected
        assert not seen & set(tops[u])


def test_ties_are_broken_pessimistically():
    ranks, _ = ranking.rank_targets(Constant(), np.arange(3), np.array([[0], [1], [2]]),
                                    ranking.CSR.build(np.array([0]), np.array([5]), 3), 10)
    assert ranks[:, 0].tolist() == [9, 10, 10]
    assert metrics.hit_rate(ranks, 5) == 0


def test_train_items_never_appear_in_top_k():
    model = Random()
    rng = np.random.default_rng(1)
    tu, ti = rng.integers(0, 200, 20000), rng.integers(0, 300, 20000)
    exclude = ranking.CSR.build(tu, ti, 200)
    _, tops = ranking.rank_targets(model, np.arange(200), np.full((200, 1), -1), exclude, 300, k=10)
    seen = set(zip(tu, ti))
    assert not any((u, i) in seen for u in range(200) for i in tops[u])


def test_random_scorer_sampled_hr_at_10_is_about_a_tenth():
    model = Random(3000)
    rng = np.random.default_rng(2)
    users = np.arange(3000)
    negs = np.argsort(rng.random((3000, 299)), 1)[:, :99] + 1  # 99 distinct non-target items per user
    r = ranking.sampled_ranks(model, users, np.zeros(3000, dtype=np.int64), negs).astype(float)[:, None]
    assert 0.08 < metrics.hit_rate(r, 10) < 0.12  # expected 10/100; 3000 users: sd 0.0055
    assert metrics.ndcg(r, 10) <= metrics.hit_rate(r, 10)


class _Table(Model):
    """A model whose scores are a fixed [n_users, n_items] table."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, user, item):
        return self.table[user, item]


def test_test_ranking_excludes_val_items_and_val_ranking_excludes_only_train(implicit_data):
    from recsys import evaluation
    from recsys.schema import ITEM, USER

    d = implicit_data
    table = torch.zeros(d.n_users, d.n_items)
    # the user's val item scores highest, the test item second: test must not be ranked below val
    table[torch.as_tensor(d.val[USER].to_numpy()), torch.as_tensor(d.val[ITEM].to_numpy())] = 10.0
    table[torch.as_tensor(d.test[USER].to_numpy()), torch.as_tensor(d.test[ITEM].to_numpy())] = 5.0
    ev = evaluation.evaluate(SimpleNamespace(model=_Table(table)), d, "test", [1], "full")
    assert ev.metrics["test/hr_at_1"] == 1.0
    ev = evaluation.evaluate(SimpleNamespace(model=_Table(table)), d, "val", [1], "full")
    assert ev.metrics["val/hr_at_1"] == 1.0  # val's own item is the best of what train leaves
    # and the test item is still a candidate when ranking val (it is not excluded there)
    table2 = table.clone()
    table2[torch.as_tensor(d.test[USER].to_numpy()), torch.as_tensor(d.test[ITEM].to_numpy())] = 20.0
    users_with_both = set(d.val[USER]) & set(d.test[USER])
    ev = evaluation.evaluate(SimpleNamespace(model=_Table(table2)), d, "val", [1], "full")
    assert ev.metrics["val/hr_at_1"] <= 1 - len(users_with_both) / ev.metrics["val/n_users"] + 1e-9


def test_eval_users_ranks_a_seeded_sample_with_the_same_per_user_values(implicit_data, rating_data):
    import pytest

    from recsys import evaluation
    from recsys.errors import RecsysError
    from recsys.schema import USER

    d = implicit_data
    table = torch.rand(d.n_users, d.n_items, generator=torch.Generator().manual_seed(3))
    module = SimpleNamespace(model=_Table(table))
    full = evaluation.evaluate(module, d, "test", [10], "full")
    part = evaluation.evaluate(module, d, "test", [10], "full", eval_users=30)
    again = evaluation.evaluate(module, d, "test", [10], "full", eval_users=30)
    assert part.metrics["test/n_users"] == 30 < full.metrics["test/n_users"]
    assert part.per_user[USER].tolist() == again.per_user[USER].tolist()  # seeded: the same users every time
    merged = part.per_user.merge(full.per_user, on=USER, suffixes=("", "_full"))
    assert len(merged) == 30 and np.allclose(merged["ndcg_at_10"], merged["ndcg_at_10_full"])
    assert part.metrics["test/ndcg_at_10"] == pytest.approx(merged["ndcg_at_10"].mean())
    everyone = evaluation.evaluate(module, d, "test", [10], "full", eval_users=10_000)
    assert everyone.metrics["test/ndcg_at_10"] == full.metrics["test/ndcg_at_10"]
    assert evaluation.setup_tags(d.meta, "test", "full", 30)["protocol"] == "leave_last_out/full@30users"
    with pytest.raises(RecsysError, match="applies to the implicit task"):
        evaluation.evaluate(module, rating_data, "test", [10], "full", eval_users=30)
    with pytest.raises(RecsysError, match="must be >= 0"):
        evaluation.evaluate(module, d, "test", [10], "full", eval_users=-1)
