"""training.models.sequence, stage popularity and peer sequences: known answers on tiny
hand-made interactions, and the pipeline's bundle on ml-100k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys_core.artifacts import PEER_ARRAYS, STAGE_POPULARITY, ModelBundle
from recsys_core.dataset import Dataset
from recsys_core.scoring import stage_of
from training.models.peers import fit_peer_sequences
from training.models.popularity import fit_stage_popularity
from training.models.sequence import _newest, context_matrix, fit_sequence
from training.pipeline import train_models

I64 = np.int64


def test_context_weights_decay_per_distinct_second_and_share_it_within_one() -> None:
    # user 0 rates a, b in the same second, then c; user 1 rates d, e, f a second apart
    users = np.array([0, 0, 0, 1, 1, 1])
    items = np.array([0, 1, 2, 3, 4, 5])
    times = np.array([10.0, 10.0, 11.0, 1.0, 2.0, 3.0])
    x, y = context_matrix(users, items, times, 6, decay=0.5, length=5)
    dense = x.toarray()
    assert y.tolist() == [1, 2, 4, 5]  # every event after a user's first one
    assert dense[0].tolist() == [1, 0, 0, 0, 0, 0]  # b: a is in the context, rank 0
    assert dense[1].tolist() == [1, 1, 0, 0, 0, 0]  # c: a and b share the newest second
    assert dense[2].tolist() == [0, 0, 0, 1, 0, 0]
    assert dense[3].tolist() == [0, 0, 0, 0.5, 1, 0]  # f: e rank 0, d rank 1


def test_context_reads_at_most_length_seconds_back_and_never_crosses_users() -> None:
    users = np.array([0, 0, 0, 0, 1])
    items = np.array([0, 1, 2, 3, 4])
    times = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    x, y = context_matrix(users, items, times, 5, decay=0.5, length=2)
    assert y.tolist() == [1, 2, 3]
    assert x.toarray()[2].tolist() == [0, 0.5, 1, 0, 0]  # item 0 is 2 seconds back: dropped
    assert x.toarray()[:, 4].sum() == 0  # user 1's only event has no context


def test_context_orders_events_by_time_not_by_input_order() -> None:
    x, y = context_matrix(np.array([0, 0]), np.array([1, 0]), np.array([2.0, 1.0]), 2)
    assert y.tolist() == [1]
    assert x.toarray().tolist() == [[1.0, 0.0]]


def test_sequence_model_is_the_ridge_solution_on_a_known_chain() -> None:
    # n users each rate 0 → 1 → 2 a second apart; with length 1 the context is the previous
    # movie: XᵀX = diag(n, n, 0), XᵀY has n at (0, 1) and (1, 2), so B = n / (n + λ) there
    n, lam = 4, 2.0
    users = np.repeat(np.arange(n), 3)
    items = np.tile([0, 1, 2], n)
    times = np.tile([1.0, 2.0, 3.0], n)
    model = fit_sequence(users, items, times, 4, decay=0.5, length=1, regularization=lam,
                         top_n=3, max_items=10)
    b = model.to_csr(4).toarray()
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 2] = n / (n + lam)
    np.testing.assert_allclose(b, expected, atol=1e-6)
    assert model.method == "sequence"


def test_sequence_model_covers_the_most_rated_movies_only() -> None:
    # movie 3 is rated once: outside a head of 3 movies it gets no row and is no target
    users = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    items = np.array([0, 1, 2, 0, 1, 2, 0, 3])
    times = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0])
    model = fit_sequence(users, items, times, 5, length=1, regularization=1.0, top_n=4,
                         max_items=3)
    b = model.to_csr(5).toarray()
    assert b[:, 3].sum() == 0 and b[3].sum() == 0 and b[4].sum() == 0
    assert b[0, 1] > 0 and b[1, 2] > 0


def test_sequence_model_reads_only_the_newest_events() -> None:
    # old events say 0 → 1, newer ones 0 → 2; with max_events only the newer are read
    users = np.array([0, 0, 1, 1])
    items = np.array([0, 1, 0, 2])
    times = np.array([1.0, 2.0, 10.0, 11.0])
    b = fit_sequence(users, items, times, 3, length=1, regularization=1.0, top_n=2,
                     max_events=2).to_csr(3).toarray()
    assert b[0, 1] == 0 and b[0, 2] == pytest.approx(0.5)


def test_sequence_model_of_too_few_movies_is_empty() -> None:
    model = fit_sequence(np.array([0]), np.array([0]), np.array([1.0]), 3)
    assert model.indptr.tolist() == [0, 0, 0, 0] and model.scores.size == 0


def test_stage_of_known_values() -> None:
    assert stage_of([0, 1, 2, 3, 7, 8], 2.0).tolist() == [0, 2, 3, 4, 6, 6]
    assert stage_of([0, 1, 3, 7], 1.0).tolist() == [0, 1, 2, 3]


def test_stage_popularity_known_shares_without_smoothing() -> None:
    # both users start with movie 0; their second movies are 1 and 2
    users = np.array([0, 0, 1, 1])
    items = np.array([0, 1, 2, 0])
    times = np.array([1.0, 2.0, 9.0, 5.0])
    table = fit_stage_popularity(users, items, times, 4, per_octave=1.0, smoothing=0.0)
    assert table.shape == (2, 4)  # stages 0 (first movie) and 1 (second)
    np.testing.assert_allclose(np.exp(table), [[1, 0, 0, 0], [0, 0.5, 0.5, 0]], atol=1e-5)


def test_stage_popularity_smoothing_mixes_neighbouring_stages() -> None:
    users = np.array([0, 0])
    items = np.array([0, 1])
    times = np.array([1.0, 2.0])
    table = np.exp(fit_stage_popularity(users, items, times, 2, per_octave=1.0, smoothing=1.0))
    w = math.exp(-1.0)
    np.testing.assert_allclose(table, [[1 / (1 + w), w / (1 + w)], [w / (1 + w), 1 / (1 + w)]],
                               atol=1e-5)


def test_stage_popularity_of_nothing_is_one_flat_row() -> None:
    table = fit_stage_popularity(np.zeros(0, I64), np.zeros(0, I64), np.zeros(0), 3)
    assert table.shape == (1, 3) and np.ptp(table) == 0


def test_peer_sequences_keep_positions_by_user_and_by_movie() -> None:
    users = np.array([5, 5, 5, 2, 2])
    items = np.array([1, 0, 2, 3, 0])
    times = np.array([2.0, 1.0, 3.0, 7.0, 8.0])
    arrays = fit_peer_sequences(users, items, times, 4)
    user_ptr, user_items, user_pos, item_ptr, item_users, item_pos = (
        arrays[k] for k in PEER_ARRAYS)
    # peers numbered by user index order: user 2 is peer 0, user 5 peer 1
    assert user_ptr.tolist() == [0, 2, 5]
    assert user_items.tolist() == [3, 0, 0, 1, 2]
    assert user_pos.tolist() == [0, 1, 0, 1, 2]
    assert item_ptr.tolist() == [0, 2, 3, 4, 5]
    assert item_users.tolist() == [0, 1, 1, 1, 0]  # movie 0: peers 0 and 1
    assert item_pos.tolist() == [1, 0, 1, 2, 0]


def test_peer_sequences_keep_the_most_recent_users_and_their_newest_movies() -> None:
    users = np.array([0, 0, 0, 1, 2])
    items = np.array([0, 1, 2, 3, 4])
    times = np.array([10.0, 11.0, 12.0, 1.0, 5.0])
    arrays = fit_peer_sequences(users, items, times, 5, max_users=2, max_per_user=2)
    # user 1 (last active at 1) is dropped; user 0 keeps movies 1 and 2 at places 1 and 2
    assert arrays["peers_user_indptr"].tolist() == [0, 2, 3]
    assert arrays["peers_user_items"].tolist() == [1, 2, 4]
    assert arrays["peers_user_positions"].tolist() == [1, 2, 0]


@pytest.fixture(scope="module")
def ml100k_bundle(ml100k: Dataset) -> ModelBundle:
    head = ml100k.interactions.sort_values("timestamp", kind="stable").iloc[:20_000]
    return train_models(ml100k, interactions=head).bundle


def test_pipeline_bundle_has_the_sequence_stage_and_peer_models(
    ml100k_bundle: ModelBundle,
) -> None:
    b = ml100k_bundle
    assert b.has_model("sequence")
    indptr, indices, scores = b.csr("sequence")
    assert indptr.shape == (b.n_items + 1,) and indices.size == scores.size > 0
    assert np.isfinite(scores).all()
    stage = b.extra[STAGE_POPULARITY]
    assert stage.shape[1] == b.n_items and stage.shape[0] > 5
    # new members rate famous films: the first stage's favourite is among the most popular
    assert b.popularity[int(np.argmax(stage[0]))] > 0.8
    assert all(name in b.extra for name in PEER_ARRAYS)
    assert b.params["stage_per_octave"] == 2.0


@pytest.mark.parametrize("count", [1, 7, 19, 20])
def test_newest_events_at_a_tied_cut_are_the_later_ones(count: int) -> None:
    times = np.array([5, 1, 5, 3, 5, 9, 1, 5, 3, 9, 2, 5, 5, 0, 7, 5, 4, 5, 6, 5], float)
    expected = np.sort(np.argsort(times, kind="stable")[-count:])
    np.testing.assert_array_equal(_newest(times, count), expected)
