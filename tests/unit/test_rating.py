"""recsys_core.rating: the per-user ridge solve, its batched form and rating prediction."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp

from recsys_core.rating import predict_rating, solve_user, solve_users_batch

ROW_LENGTHS = [0, 1, 2, 5, 0, 17, 40, 3, 1, 0, 9, 9, 25, 2]


def _random_ratings(
    seed: int, n_items: int = 40, k: int = 4
) -> tuple[sp.csr_matrix, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    rows, cols, vals = [], [], []
    for r, n in enumerate(ROW_LENGTHS):
        items = rng.choice(n_items, size=n, replace=False)
        rows += [r] * n
        cols += items.tolist()
        vals += (rng.integers(1, 11, size=n) / 2.0).tolist()  # 0.5 .. 5 stars
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(len(ROW_LENGTHS), n_items))
    matrix.sort_indices()
    item_factors = (rng.standard_normal((n_items, k)) * 0.5).astype(np.float32)
    item_bias = (rng.standard_normal(n_items) * 0.3).astype(np.float32)
    return matrix, item_factors, item_bias


@pytest.mark.parametrize("chunk_cells", [1 << 15, 40, 1])
def test_solve_users_batch_equals_per_row_solve_user(chunk_cells: int) -> None:
    matrix, q, b = _random_ratings(seed=0)
    mean, reg, bias_reg = 3.2, 0.1, 2.0
    factors, bias = solve_users_batch(
        matrix.indptr, matrix.indices, matrix.data, q, b, mean, reg, bias_reg,
        chunk_cells=chunk_cells,
    )
    assert factors.shape == (len(ROW_LENGTHS), 4) and factors.dtype == np.float32
    assert bias.shape == (len(ROW_LENGTHS),) and bias.dtype == np.float32
    for r in range(matrix.shape[0]):
        s, e = matrix.indptr[r], matrix.indptr[r + 1]
        idx = matrix.indices[s:e]
        exp_bias, exp_x = solve_user(q[idx], b[idx], matrix.data[s:e], mean, reg, bias_reg)
        np.testing.assert_allclose(bias[r], exp_bias, atol=1e-5, err_msg=f"row {r}")
        np.testing.assert_allclose(factors[r], exp_x, atol=1e-5, err_msg=f"row {r}")


def test_solve_users_batch_gives_zeros_to_empty_rows() -> None:
    matrix, q, b = _random_ratings(seed=1)
    factors, bias = solve_users_batch(
        matrix.indptr, matrix.indices, matrix.data, q, b, 3.0, 0.1, 1.0
    )
    empty = np.flatnonzero(np.diff(matrix.indptr) == 0)
    assert empty.size == 3
    np.testing.assert_array_equal(factors[empty], 0.0)
    np.testing.assert_array_equal(bias[empty], 0.0)
    assert np.all(np.abs(factors[np.diff(matrix.indptr) > 0]).sum(axis=1) > 0)


def test_solve_users_batch_with_no_ratings_at_all() -> None:
    q = np.ones((5, 2), dtype=np.float32)
    factors, bias = solve_users_batch(
        np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0),
        q, np.zeros(5, np.float32), 3.0, 0.1, 1.0,
    )
    np.testing.assert_array_equal(factors, np.zeros((3, 2)))
    np.testing.assert_array_equal(bias, np.zeros(3))


def test_solve_user_known_answer() -> None:
    # one rating 4 of an item with factor q = 1 and bias 0, mean 3: target 1
    # design row (1, 1); lambda_x * n = 1, lambda_b = 1:
    # A = [[1, 1], [1, 1]] + diag(1, 1) = [[2, 1], [1, 2]];  b = (1, 1)  ->  (1/3, 1/3)
    b_u, x = solve_user(np.array([[1.0]]), np.array([0.0]), [4.0], 3.0, 1.0, 1.0)
    assert b_u == pytest.approx(1 / 3)
    np.testing.assert_allclose(x, [1 / 3], rtol=1e-6)
    assert x.dtype == np.float32


def test_solve_user_factor_penalty_scales_with_the_number_of_ratings() -> None:
    # two ratings 4 of the same-looking item (q = 1, bias 0), mean 3: targets (1, 1)
    # A = [[2, 2], [2, 2]] + diag(lambda_b = 1, lambda_x * n = 2) = [[3, 2], [2, 4]]; b = (2, 2)
    # solution: det = 8; b_u = (4*2 - 2*2) / 8 = 0.5; x = (3*2 - 2*2) / 8 = 0.25
    b_u, x = solve_user(np.array([[1.0], [1.0]]), np.array([0.0, 0.0]), [4.0, 4.0], 3.0, 1.0, 1.0)
    assert b_u == pytest.approx(0.5)
    np.testing.assert_allclose(x, [0.25], rtol=1e-6)


def test_solve_user_without_ratings_gives_zeros() -> None:
    b_u, x = solve_user(np.zeros((0, 3)), np.zeros(0), [], 3.5, 0.1, 1.0)
    assert b_u == 0.0
    np.testing.assert_array_equal(x, np.zeros(3, dtype=np.float32))


def _prediction_model() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    # item 0 is rated; items 1..3 are targets with large positive / negative factors
    q = np.array([[1.0], [50.0], [-50.0], [0.0]], dtype=np.float32)
    b = np.array([0.0, 0.0, 0.0, 0.25], dtype=np.float32)
    return q, b


def test_predict_rating_clips_to_the_rating_range() -> None:
    q, b = _prediction_model()
    # the user rates item 0 (q = 1) with 5, mean 3: target 2, design row (1, 1):
    # A = [[2, 1], [1, 2]], b = (2, 2) -> b_u = x = 2/3
    pred = predict_rating(q, b, 3.0, 1.0, 1.0, np.array([0]), [5.0], [1, 2, 3])
    # item 1: 3 + 2/3 + 0 + 50 * 2/3 -> clipped to 5.0; item 2: far below -> 0.5
    # item 3: 3 + 2/3 + 0.25 + 0 = 3.916667 (inside the range, unchanged)
    np.testing.assert_allclose(pred, [5.0, 0.5, 3.0 + 2 / 3 + 0.25], rtol=1e-6)
    assert pred.dtype == np.float64


def test_predict_rating_uses_the_given_range() -> None:
    q, b = _prediction_model()
    pred = predict_rating(
        q, b, 3.0, 1.0, 1.0, np.array([0]), [5.0], [1, 2], rating_range=(1.0, 10.0)
    )
    np.testing.assert_allclose(pred, [10.0, 1.0])


def test_predict_rating_for_a_user_without_ratings_is_mean_plus_item_bias() -> None:
    q, b = _prediction_model()
    pred = predict_rating(q, b, 3.0, 1.0, 1.0, np.array([], dtype=np.int64), [], [0, 3])
    np.testing.assert_allclose(pred, [3.0, 3.25])
