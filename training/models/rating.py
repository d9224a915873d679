"""Explicit rating prediction: biased matrix factorisation fitted by alternating least squares.

Chosen over Surprise's SVD because (1) Surprise's compiled extension does not build against
numpy 2 on every platform, (2) ALS gives the same closed-form per-user solve that the serving
layer uses to fold in a user's ratings live, and (3) it fits ml-100k in well under a second.
Model: ``r̂_ui = μ + b_u + b_i + p_u·q_i`` with L2 penalties scaled by each row's count
(ALS-WR, Zhou et al. 2008), biases estimated inside the same least-squares solves.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys_core.rating import solve_users_batch

F32 = npt.NDArray[np.float32]
#: fewer rows than this are solved in one thread (threads cost more than they save)
PARALLEL_MIN_ROWS = 20_000


@dataclass
class RatingModel:
    global_mean: float
    user_bias: F32
    item_bias: F32
    user_factors: F32
    item_factors: F32
    regularization: float
    bias_regularization: float

    def predict(self, user_idx: npt.ArrayLike, item_idx: npt.ArrayLike) -> npt.NDArray[np.float64]:
        u = np.asarray(user_idx, dtype=np.int64)
        i = np.asarray(item_idx, dtype=np.int64)
        dots = np.einsum("ij,ij->i", self.user_factors[u], self.item_factors[i])
        return self.global_mean + self.user_bias[u] + self.item_bias[i] + dots


def _solve_side(
    matrix: sp.csr_matrix,
    other_factors: F32,
    other_bias: F32,
    mean: float,
    reg: float,
    bias_reg: float,
    workers: int = 1,
) -> tuple[F32, F32]:
    """Every row's solve; with ``workers`` > 1 the rows are dealt by length to that many
    threads (numpy's batched ``matmul`` and ``solve`` release the GIL), each row's result is
    the same as in one pass."""
    if workers <= 1 or matrix.shape[0] < PARALLEL_MIN_ROWS:
        return solve_users_batch(matrix.indptr, matrix.indices, matrix.data, other_factors,
                                 other_bias, mean, reg, bias_reg)
    order = np.argsort(np.diff(matrix.indptr), kind="stable")
    parts = [np.sort(order[w::workers]) for w in range(workers)]

    def solve(rows: npt.NDArray[np.int64]) -> tuple[F32, F32]:
        sub = matrix[rows]
        return solve_users_batch(sub.indptr, sub.indices, sub.data, other_factors,
                                 other_bias, mean, reg, bias_reg)

    factors = np.zeros((matrix.shape[0], other_factors.shape[1]), dtype=np.float32)
    bias = np.zeros(matrix.shape[0], dtype=np.float32)
    with ThreadPoolExecutor(workers) as pool:
        for rows, (f, b) in zip(parts, pool.map(solve, parts), strict=True):
            factors[rows], bias[rows] = f, b
    return factors, bias


def default_workers() -> int:
    """Threads for the solves: the CPUs this process may run on, as ``implicit`` uses."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def fit_rating_model(
    matrix: sp.csr_matrix,
    factors: int = 32,
    regularization: float = 0.12,
    bias_regularization: float = 1.0,
    iterations: int = 12,
    seed: int = 0,
    workers: int | None = None,
) -> RatingModel:
    """Fit on a users × items CSR matrix of explicit ratings (stored zeros are not allowed);
    ``workers`` threads share each half-step (default: :func:`default_workers`)."""
    workers = default_workers() if workers is None else workers
    rng = np.random.default_rng(seed)
    r = matrix.tocsr().astype(np.float64)
    rt = r.T.tocsr()
    mean = float(r.data.mean())
    n_users, n_items = r.shape
    item_f = (rng.standard_normal((n_items, factors)) * 0.01).astype(np.float32)
    item_b = np.zeros(n_items, dtype=np.float32)
    user_f = np.zeros((n_users, factors), dtype=np.float32)
    user_b = np.zeros(n_users, dtype=np.float32)
    for _ in range(iterations):
        user_f, user_b = _solve_side(r, item_f, item_b, mean, regularization,
                                     bias_regularization, workers)
        item_f, item_b = _solve_side(rt, user_f, user_b, mean, regularization,
                                     bias_regularization, workers)
    return RatingModel(mean, user_b, item_b, user_f, item_f, regularization, bias_regularization)
