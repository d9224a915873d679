"""Explicit rating prediction for one user from their ratings, item factors held fixed.

The same ridge solve fits users during training and folds in a user's fresh ratings at
serving time: ``min Σ (r - μ - b_i - b_u - x·q_i)² + λ n ‖x‖² + λ_b b_u²``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def solve_user(
    item_factors: npt.NDArray[np.floating],
    item_bias: npt.NDArray[np.floating],
    ratings: npt.ArrayLike,
    global_mean: float,
    regularization: float,
    bias_regularization: float,
) -> tuple[float, npt.NDArray[np.float32]]:
    """The user's bias and factor vector from their ratings of the given items."""
    r = np.asarray(ratings, dtype=np.float64)
    n = r.size
    k = item_factors.shape[1]
    if n == 0:
        return 0.0, np.zeros(k, dtype=np.float32)
    q = np.empty((n, k + 1))
    q[:, 0] = 1.0
    q[:, 1:] = item_factors
    target = r - global_mean - np.asarray(item_bias, dtype=np.float64)
    penalty = np.full(k + 1, regularization * n)
    penalty[0] = bias_regularization
    a = q.T @ q + np.diag(penalty)
    sol = np.linalg.solve(a, q.T @ target)
    return float(sol[0]), sol[1:].astype(np.float32)


def predict_rating(
    item_factors: npt.NDArray[np.floating],
    item_bias: npt.NDArray[np.floating],
    global_mean: float,
    regularization: float,
    bias_regularization: float,
    rated_idx: npt.NDArray[np.int64],
    ratings: npt.ArrayLike,
    target_idx: npt.ArrayLike,
    rating_range: tuple[float, float] = (0.5, 5.0),
) -> npt.NDArray[np.float64]:
    """Predicted stars of ``target_idx`` for a user who rated ``rated_idx``, clipped to range."""
    b_u, x = solve_user(
        item_factors[rated_idx], item_bias[rated_idx], ratings, global_mean,
        regularization, bias_regularization,
    )
    t = np.asarray(target_idx, dtype=np.int64)
    pred = global_mean + b_u + item_bias[t] + item_factors[t] @ x
    return np.clip(pred.astype(np.float64), *rating_range)


def solve_users_batch(
    indptr: npt.NDArray[np.integer],
    indices: npt.NDArray[np.integer],
    ratings: npt.NDArray[np.floating],
    item_factors: npt.NDArray[np.floating],
    item_bias: npt.NDArray[np.floating],
    global_mean: float,
    regularization: float,
    bias_regularization: float,
    chunk_cells: int = 1 << 15,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """:func:`solve_user` for every row of a CSR matrix at once (rows without ratings get 0).

    Rows are sorted by length and processed in chunks padded to the chunk's longest row, so
    the normal equations of a chunk come from one batched ``matmul`` and are solved by one
    batched ``np.linalg.solve``.
    """
    n_rows = indptr.size - 1
    k = item_factors.shape[1]
    bias = np.zeros(n_rows, dtype=np.float32)
    factors = np.zeros((n_rows, k), dtype=np.float32)
    q_all = np.empty((item_factors.shape[0] + 1, k + 1))
    q_all[:-1, 0] = 1.0
    q_all[:-1, 1:] = item_factors
    q_all[-1] = 0.0  # padding row
    target_all = np.asarray(ratings, np.float64) - global_mean - item_bias[indices]
    counts = np.diff(indptr).astype(np.int64)
    rows = np.flatnonzero(counts > 0)
    rows = rows[np.argsort(counts[rows], kind="stable")]
    eye = np.arange(k + 1)
    start = 0
    while start < rows.size:
        width = int(counts[rows[start]])
        stop = start + 1
        while stop < rows.size and (stop - start + 1) * int(counts[rows[stop]]) <= chunk_cells:
            stop += 1
        chunk = rows[start:stop]
        width = int(counts[chunk[-1]])
        pos = indptr[chunk][:, None] + np.arange(width)[None, :]
        valid = np.arange(width)[None, :] < counts[chunk][:, None]
        pos = np.where(valid, pos, 0)
        item_rows = np.where(valid, indices[pos], q_all.shape[0] - 1)
        q = q_all[item_rows]  # (rows, width, k + 1)
        t = np.where(valid, target_all[pos], 0.0)
        a = np.matmul(q.transpose(0, 2, 1), q)
        b = np.matmul(q.transpose(0, 2, 1), t[:, :, None])[:, :, 0]
        a[:, eye[1:], eye[1:]] += regularization * counts[chunk][:, None]
        a[:, 0, 0] += bias_regularization
        sol = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        bias[chunk] = sol[:, 0]
        factors[chunk] = sol[:, 1:]
        start = stop
    return factors, bias
