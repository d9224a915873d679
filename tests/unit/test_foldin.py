"""recsys_core.foldin: the closed-form user vector, pinned against implicit's recalculate_user."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_core.confidence import ConfidenceRule
from recsys_core.dataset import Dataset
from recsys_core.foldin import fold_in_user, gramian

REGULARIZATION = 0.1


@dataclass
class Fitted:
    model: object  # implicit.cpu.als.AlternatingLeastSquares
    confidence: sp.csr_matrix
    item_factors: npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def fitted(ml100k: Dataset) -> Fitted:
    from implicit.als import AlternatingLeastSquares

    inter = ml100k.interactions
    users, user_idx = np.unique(inter["user_id"].to_numpy(), return_inverse=True)
    movies, movie_idx = np.unique(inter["movie_id"].to_numpy(), return_inverse=True)
    conf = ConfidenceRule().from_ratings(inter["rating"].to_numpy(np.float64))
    matrix = sp.csr_matrix(
        (conf.astype(np.float32), (user_idx, movie_idx)), shape=(users.size, movies.size)
    )
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=16, regularization=REGULARIZATION, alpha=1.0, iterations=5,
            use_gpu=False, random_state=0,
        )
        model.fit(matrix, show_progress=False)
    return Fitted(model, matrix, np.asarray(model.item_factors, dtype=np.float32))


def _implicit_vector(fitted: Fitted, row: sp.csr_matrix) -> npt.NDArray[np.float32]:
    with threadpool_limits(1, "blas"):
        out = fitted.model.recalculate_user(0, row)  # type: ignore[attr-defined]
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("user_idx", [0, 1, 41, 404, 942])
def test_fold_in_matches_implicit_recalculate_user(fitted: Fitted, user_idx: int) -> None:
    row = fitted.confidence[user_idx]
    assert row.nnz >= 20  # real ml-100k users have at least 20 ratings
    expected = _implicit_vector(fitted, row)
    got = fold_in_user(
        fitted.item_factors, gramian(fitted.item_factors), row.indices, row.data, REGULARIZATION
    )
    assert got.shape == (16,)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_fold_in_matches_implicit_for_a_user_with_one_interaction(fitted: Fitted) -> None:
    # one real rating of user 0, alone on a row
    full = fitted.confidence[0]
    item, conf = int(full.indices[0]), float(full.data[0])
    row = sp.csr_matrix(
        (np.array([conf], np.float32), (np.array([0]), np.array([item]))),
        shape=(1, fitted.confidence.shape[1]),
    )
    expected = _implicit_vector(fitted, row)
    got = fold_in_user(
        fitted.item_factors, gramian(fitted.item_factors), np.array([item]), [conf],
        REGULARIZATION,
    )
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert np.abs(got).max() > 0


def test_fold_in_matches_implicit_for_unordered_indices(fitted: Fitted) -> None:
    # the same interactions in another order give the same vector
    row = fitted.confidence[7]
    perm = np.random.default_rng(0).permutation(row.nnz)
    yty = gramian(fitted.item_factors)
    a = fold_in_user(fitted.item_factors, yty, row.indices, row.data, REGULARIZATION)
    b = fold_in_user(fitted.item_factors, yty, row.indices[perm], row.data[perm], REGULARIZATION)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, _implicit_vector(fitted, row), atol=1e-4, rtol=1e-4)


def test_gramian_equals_implicit_yty(fitted: Fitted) -> None:
    y = fitted.item_factors
    np.testing.assert_allclose(gramian(y), y.astype(np.float64).T @ y.astype(np.float64))
    yty_implicit = fitted.model.YtY  # type: ignore[attr-defined]
    np.testing.assert_allclose(gramian(y), yty_implicit, rtol=1e-4, atol=1e-3)


# --- small known answers and bad input ---------------------------------------------------


def test_fold_in_known_answer_with_one_factor() -> None:
    # Y = [[1], [2]]: YtY = 1 + 4 = 5; one interaction with item 1, c = 3, lambda = 1:
    # A = 5 + 1 + (3 - 1) * 2 * 2 = 14;  b = 3 * 2 = 6;  x = 6 / 14 = 0.428571
    y = np.array([[1.0], [2.0]], dtype=np.float32)
    x = fold_in_user(y, gramian(y), np.array([1]), np.array([3.0]), 1.0)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [6.0 / 14.0], rtol=1e-6)


def test_fold_in_known_answer_with_two_interactions() -> None:
    # Y = I (2 x 2): YtY = I; items 0 and 1 with c = 2 and 5, lambda = 0.5:
    # A = I + 0.5 I + diag(1, 4) = diag(2.5, 5.5);  b = (2, 5);  x = (0.8, 0.909091)
    y = np.eye(2, dtype=np.float32)
    x = fold_in_user(y, gramian(y), np.array([0, 1]), np.array([2.0, 5.0]), 0.5)
    np.testing.assert_allclose(x, [2.0 / 2.5, 5.0 / 5.5], rtol=1e-6)


def test_gramian_is_yt_y_in_float64() -> None:
    y = np.random.default_rng(1).standard_normal((7, 3)).astype(np.float32)
    g = gramian(y)
    assert g.dtype == np.float64
    assert g.shape == (3, 3)
    np.testing.assert_allclose(g, y.astype(np.float64).T @ y.astype(np.float64), rtol=1e-12)
    np.testing.assert_allclose(g, g.T)


def test_empty_history_gives_the_zero_vector() -> None:
    y = np.ones((4, 3), dtype=np.float32)
    x = fold_in_user(y, gramian(y), np.array([], dtype=np.int64), np.array([]), 0.1)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize("bad_idx", [-1, 4, 100])
def test_fold_in_refuses_out_of_range_indexes(bad_idx: int) -> None:
    # implicit would read -1 as the last row; fold_in_user refuses it
    y = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(IndexError, match="out of range"):
        fold_in_user(y, gramian(y), np.array([0, bad_idx]), np.array([2.0, 3.0]), 0.1)


def test_fold_in_refuses_mismatched_lengths() -> None:
    y = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="same length"):
        fold_in_user(y, gramian(y), np.array([0, 1]), np.array([2.0]), 0.1)
