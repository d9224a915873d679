"""recsys_core.metrics: known answers on tiny hand-computed cases."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from recsys_core.metrics import (
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    mae,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
    rmse,
)

Metric = Callable[..., float]

RANKING_METRICS: list[Metric] = [precision_at_k, recall_at_k, ndcg_at_k, map_at_k]


# --- ranking metrics: perfect, no hit, empty --------------------------------------------


@pytest.mark.parametrize("metric", RANKING_METRICS, ids=lambda f: f.__name__)
def test_ranking_metric_is_one_for_a_perfect_ranking(metric: Metric) -> None:
    recs = [[3, 1, 2], [7, 8, 9]]
    relevant = [{1, 2, 3}, {7, 8, 9}]
    assert metric(recs, relevant, k=3) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", RANKING_METRICS, ids=lambda f: f.__name__)
def test_ranking_metric_is_zero_without_a_hit(metric: Metric) -> None:
    recs = [[4, 5, 6], [1, 2, 3]]
    relevant = [{1, 2}, {9}]
    assert metric(recs, relevant, k=3) == 0.0


@pytest.mark.parametrize("metric", RANKING_METRICS, ids=lambda f: f.__name__)
def test_ranking_metric_skips_users_with_no_relevant_items(metric: Metric) -> None:
    # the second user has nothing relevant: the mean is over the first user only (1.0),
    # not (1.0 + 0.0) / 2
    recs = [[1, 2], [3, 4]]
    relevant: list[set[int]] = [{1, 2}, set()]
    assert metric(recs, relevant, k=2) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", RANKING_METRICS, ids=lambda f: f.__name__)
def test_ranking_metric_is_zero_when_no_user_has_relevant_items(metric: Metric) -> None:
    assert metric([[1, 2], [3]], [set(), set()], k=2) == 0.0


@pytest.mark.parametrize("metric", RANKING_METRICS, ids=lambda f: f.__name__)
def test_ranking_metric_refuses_recs_and_relevant_of_different_lengths(metric: Metric) -> None:
    with pytest.raises(ValueError):
        metric([[1, 2], [3, 4]], [{1}], k=2)


@pytest.mark.parametrize("metric", RANKING_METRICS, ids=lambda f: f.__name__)
def test_ranking_metric_is_the_mean_over_users(metric: Metric) -> None:
    # user 1 perfect (1.0), user 2 no hit (0.0)
    recs = [[1, 2], [5, 6]]
    relevant = [{1, 2}, {7, 8}]
    assert metric(recs, relevant, k=2) == pytest.approx(0.5)


def test_ranking_metrics_accept_numpy_arrays() -> None:
    recs = [np.array([1, 2, 3], dtype=np.int64)]
    relevant = [{1, 3}]
    assert precision_at_k(recs, relevant, k=3) == pytest.approx(2 / 3)


# --- ranking metrics: hand-computed partial cases ---------------------------------------


def test_precision_at_k_partial_hits() -> None:
    # top 3 = [1, 2, 3], hits at 1 and 3: 2 / 3
    assert precision_at_k([[1, 2, 3, 4]], [{1, 3, 9}], k=3) == pytest.approx(2 / 3)


def test_precision_at_k_divides_by_k_even_for_short_lists() -> None:
    # one hit in a list of one, k = 3: 1 / 3
    assert precision_at_k([[1]], [{1}], k=3) == pytest.approx(1 / 3)


def test_recall_at_k_partial_hits() -> None:
    # hits 1 and 3 of relevant {1, 3, 9}: 2 / 3
    assert recall_at_k([[1, 2, 3, 4]], [{1, 3, 9}], k=3) == pytest.approx(2 / 3)


def test_recall_at_k_ignores_hits_below_k() -> None:
    # 9 is at rank 4, outside k = 3: hits {1} of {1, 9}: 1 / 2
    assert recall_at_k([[1, 2, 3, 9]], [{1, 9}], k=3) == pytest.approx(0.5)


def test_ndcg_at_k_partial_hits() -> None:
    # hits at ranks 1 and 3: DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5
    # ideal: min(|rel|=3, k=3) = 3 hits: IDCG = 1 + 1/log2(3) + 0.5 = 2.130930
    # NDCG = 1.5 / 2.130930 = 0.703918
    expected = 1.5 / (1.0 + 1.0 / math.log2(3) + 0.5)
    assert ndcg_at_k([[1, 2, 3]], [{1, 3, 9}], k=3) == pytest.approx(expected)
    assert expected == pytest.approx(0.703918, abs=1e-6)


def test_ndcg_at_k_single_hit_at_rank_two() -> None:
    # DCG = 1/log2(3) = 0.630930; IDCG (one relevant item) = 1: NDCG = 0.630930
    assert ndcg_at_k([[5, 1]], [{1}], k=2) == pytest.approx(1.0 / math.log2(3))


def test_ndcg_at_k_ideal_caps_at_k_when_more_items_are_relevant() -> None:
    # 3 relevant, k = 2, both slots hit: DCG = IDCG = 1 + 1/log2(3): NDCG = 1.0
    assert ndcg_at_k([[1, 2]], [{1, 2, 3}], k=2) == pytest.approx(1.0)


def test_map_at_k_partial_hits() -> None:
    # hits at ranks 1 and 3: precisions 1/1 and 2/3, sum 5/3, divided by |rel| = 2: 5/6
    assert map_at_k([[1, 2, 3]], [{1, 3}], k=3) == pytest.approx(5 / 6)


def test_map_at_k_divides_by_all_relevant_items() -> None:
    # hits at ranks 1 and 3 (precisions 1 and 2/3, sum 5/3); 9 is relevant but never shown:
    # 5/3 / |rel| = 5/3 / 3 = 5/9 (dividing by the 2 hits would give 5/6)
    assert map_at_k([[1, 2, 3]], [{1, 3, 9}], k=3) == pytest.approx(5 / 9)


def test_map_at_k_divides_by_all_relevant_items_even_beyond_k() -> None:
    # k = 2, both slots hit (precisions 1 and 1), 3 relevant: 2 / 3
    assert map_at_k([[1, 2]], [{1, 2, 3}], k=2) == pytest.approx(2 / 3)


# --- single-target metrics --------------------------------------------------------------


def test_hit_rate_at_k_counts_targets_in_the_top_k() -> None:
    recs = [[1, 2, 3], [4, 5, 6]]
    # k = 3: target 3 found, target 9 not: 1/2
    assert hit_rate_at_k(recs, [3, 9], k=3) == pytest.approx(0.5)
    # k = 2: target 3 is at rank 3: 0/2
    assert hit_rate_at_k(recs, [3, 9], k=2) == 0.0
    assert hit_rate_at_k(recs, [1, 4], k=1) == pytest.approx(1.0)


def test_mrr_at_k_is_the_mean_reciprocal_rank() -> None:
    recs = [[1, 2, 3], [4, 5, 6]]
    # ranks 2 and 3: (1/2 + 1/3) / 2 = 5/12
    assert mrr_at_k(recs, [2, 6], k=3) == pytest.approx(5 / 12)
    # k = 2: rank 2 counts, rank 3 is absent: (1/2 + 0) / 2 = 1/4
    assert mrr_at_k(recs, [2, 6], k=2) == pytest.approx(0.25)
    assert mrr_at_k(recs, [1, 4], k=3) == pytest.approx(1.0)
    assert mrr_at_k(recs, [9, 9], k=3) == 0.0


def test_single_target_metrics_are_zero_for_no_cases() -> None:
    assert hit_rate_at_k([], [], k=3) == 0.0
    assert mrr_at_k([], [], k=3) == 0.0


def test_single_target_metrics_refuse_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        hit_rate_at_k([[1, 2]], [1, 2], k=2)
    with pytest.raises(ValueError):
        mrr_at_k([[1, 2]], [1, 2], k=2)


# --- rating errors ----------------------------------------------------------------------


def test_rmse_and_mae_known_values() -> None:
    # errors 0, 0, 2: RMSE = sqrt(4/3) = 1.154701, MAE = 2/3
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    # errors 3, 4: RMSE = sqrt((9 + 16) / 2) = 3.535534, MAE = 3.5
    assert rmse([0, 0], [3, 4]) == pytest.approx(math.sqrt(12.5))
    assert mae([0, 0], [3, 4]) == pytest.approx(3.5)


def test_rmse_and_mae_are_zero_for_exact_predictions() -> None:
    assert rmse([4.0, 2.5], [4.0, 2.5]) == 0.0
    assert mae([4.0, 2.5], [4.0, 2.5]) == 0.0


@pytest.mark.parametrize("fn", [rmse, mae], ids=lambda f: f.__name__)
def test_rating_error_refuses_empty_input(fn: Metric) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        fn([], [])


@pytest.mark.parametrize("fn", [rmse, mae], ids=lambda f: f.__name__)
def test_rating_error_refuses_mismatched_shapes(fn: Metric) -> None:
    with pytest.raises(ValueError, match="same shape"):
        fn([1, 2, 3], [1, 2])


# --- beyond accuracy --------------------------------------------------------------------


def test_catalog_coverage_counts_distinct_items_in_the_top_k() -> None:
    # k = 2: shown {0, 1} and {1, 3} -> {0, 1, 3}, 3 of 10 movies
    assert catalog_coverage([[0, 1, 2], [1, 3, 4]], n_items=10, k=2) == pytest.approx(0.3)
    # k = 3: {0, 1, 2, 3, 4}, 5 of 10
    assert catalog_coverage([[0, 1, 2], [1, 3, 4]], n_items=10, k=3) == pytest.approx(0.5)


def test_catalog_coverage_of_an_empty_catalogue_is_zero() -> None:
    assert catalog_coverage([], n_items=0, k=5) == 0.0


def test_novelty_is_the_mean_self_information() -> None:
    p = [0.5, 0.25, 1.0, 0.125]
    # k = 2: -log2 of 0.5, 0.25, 1.0, 0.125 = 1, 2, 0, 3: mean 1.5
    assert novelty([[0, 1], [2, 3]], p, k=2) == pytest.approx(1.5)
    # k = 1: items 0 and 2: (1 + 0) / 2 = 0.5
    assert novelty([[0, 1], [2, 3]], p, k=1) == pytest.approx(0.5)


def test_novelty_of_a_never_seen_item_is_finite() -> None:
    # p = 0 is floored at 1e-12: -log2(1e-12) = 39.863137
    assert novelty([[0]], [0.0], k=1) == pytest.approx(-math.log2(1e-12))


def test_intra_list_diversity_known_values() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    # orthogonal (vector norms do not matter): distance 1
    assert intra_list_diversity([[0, 1]], vectors, k=2) == pytest.approx(1.0)
    # 45 degrees: 1 - cos 45 = 1 - 0.707107 = 0.292893
    assert intra_list_diversity([[0, 2]], vectors, k=2) == pytest.approx(1 - 1 / math.sqrt(2))
    # three items: pairs 1, 0.292893, 0.292893: mean 1.585786 / 3 = 0.528595
    assert intra_list_diversity([[0, 1, 2]], vectors, k=3) == pytest.approx(
        (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    )
    # the same item twice: distance 0
    assert intra_list_diversity([[2, 2]], vectors, k=2) == pytest.approx(0.0)


def test_intra_list_diversity_skips_lists_shorter_than_two() -> None:
    vectors = np.eye(3)
    assert intra_list_diversity([[0]], vectors, k=5) == 0.0
    # the one-item list is skipped: mean over the second list only
    assert intra_list_diversity([[0], [0, 1]], vectors, k=5) == pytest.approx(1.0)
    # k = 1 makes every list a single item
    assert intra_list_diversity([[0, 1], [1, 2]], vectors, k=1) == 0.0


def test_intra_list_diversity_with_a_zero_vector_stays_a_mean_pair_distance() -> None:
    # the only pair has cosine similarity 0 (zero vector): distance 1
    vectors = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert intra_list_diversity([[0, 1]], vectors, k=2) == pytest.approx(1.0)
