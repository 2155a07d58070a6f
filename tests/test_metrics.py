import numpy as np
import pytest

from recsys import metrics as M

INF = np.inf


def test_rmse_mae_r2_match_hand_computed_values():
    pred, true = np.array([3.0, 4.0, 5.0]), np.array([2.0, 4.0, 4.0])
    assert M.rmse(pred, true) == pytest.approx(np.sqrt(2 / 3))
    assert M.mae(pred, true) == pytest.approx(2 / 3)
    # SST = (2-10/3)^2 + 2*(4-10/3)^2 = 16/9 + 8/9 = 8/3; SSE = 2
    assert M.r2(pred, true) == pytest.approx(1 - 2 / (8 / 3))


def test_r2_is_zero_for_predicting_the_mean():
    true = np.array([1.0, 2.0, 3.0])
    assert M.r2(np.full(3, 2.0), true) == pytest.approx(0.0)


def test_ndcg_is_one_for_perfect_ranking():
    assert M.ndcg(np.array([[1.0]]), 10) == 1.0
    assert M.ndcg(np.array([[1.0, 2.0, INF]]), 10) == 1.0


def test_no_hit_gives_zero_everywhere():
    ranks = np.array([[11.0], [50.0]])
    for fn in M.RANKING.values():
        assert fn(ranks, 10) == 0.0


def test_single_item_metrics_by_hand():
    ranks = np.array([[3.0]])
    assert M.hit_rate(ranks, 5) == 1.0
    assert M.ndcg(ranks, 5) == pytest.approx(1 / np.log2(4))
    assert M.mrr(ranks, 5) == pytest.approx(1 / 3)
    assert M.average_precision(ranks, 5) == pytest.approx(1 / 3)
    assert M.precision(ranks, 5) == pytest.approx(1 / 5)
    assert M.recall(ranks, 5) == 1.0


def test_multi_item_metrics_by_hand():
    ranks = np.array([[1.0, 4.0, 20.0]])  # three relevant items; two in the top 5
    assert M.precision(ranks, 5) == pytest.approx(2 / 5)
    assert M.recall(ranks, 5) == pytest.approx(2 / 3)
    dcg = 1 + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert M.ndcg(ranks, 5) == pytest.approx(dcg / idcg)
    assert M.average_precision(ranks, 5) == pytest.approx((1 / 1 + 2 / 4) / 3)
    assert M.mrr(ranks, 5) == 1.0


def test_ndcg_never_exceeds_hit_rate_with_one_held_out_item():
    ranks = np.random.default_rng(0).integers(1, 100, (500, 1)).astype(float)
    for k in (1, 5, 10, 20):
        assert M.ndcg(ranks, k) <= M.hit_rate(ranks, k)


def test_k_must_be_a_positive_integer():
    with pytest.raises(ValueError):
        M.ndcg(np.array([[1.0]]), 0)


def test_auc_by_hand_with_ties_counting_half():
    assert M.auc(np.array([3.0, 1.0]), np.array([2.0, 1.0])) == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert M.auc(np.array([5.0]), np.array([1.0, 2.0])) == 1.0


def test_log_loss_by_hand():
    assert M.log_loss(np.array([0.8, 0.1]), np.array([1, 0])) == pytest.approx(-(np.log(0.8) + np.log(0.9)) / 2)


def test_coverage_novelty_popularity_percentile():
    top = np.array([[0, 1], [0, 2]])
    counts = np.array([8, 4, 2, 1])
    assert M.coverage(top, 4) == 0.75
    assert M.novelty(top, counts, 8) == pytest.approx(np.mean(-np.log2(np.array([8, 4, 8, 2]) / 8)))
    assert M.popularity_percentile(np.array([[0]]), counts) == 100.0
