"""Explicit rating prediction: biased matrix factorisation fitted by alternating least squares.

Chosen over Surprise's SVD because (1) Surprise's compiled extension does not build against
numpy 2 on every platform, (2) ALS gives the same closed-form per-user solve that the serving
layer uses to fold in a user's ratings live, and (3) it fits ml-100k in well under a second.
Model: ``r̂_ui = μ + b_u + b_i + p_u·q_i`` with L2 penalties scaled by each row's count
(ALS-WR, Zhou et al. 2008), biases estimated inside the same least-squares solves.

Each half-step solves every row exactly (the normal equations of
:func:`recsys_core.rating.solve_user`, in float32): rows are sorted by length once per fit
and cut into chunks padded to the chunk's longest row (:class:`_Layout`), so that a chunk's
normal equations come from one batched ``matmul`` and are solved by one batched
``np.linalg.solve``. Float32 halves the gather and the products against float64; with the
ridge (``λ·n`` on every factor) the systems are well conditioned and the solutions agree with
float64 to about 1e-6.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
#: fewer rows than this are solved in one thread (threads cost more than they save)
PARALLEL_MIN_ROWS = 20_000
#: padded cells per chunk (rows × the chunk's longest row)
CHUNK_CELLS = 1 << 15


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


@dataclass
class _Chunk:
    rows: I64  # the chunk's rows of the matrix
    columns: npt.NDArray[np.int32]  # (rows, width) columns; padding: the extra zero column
    ratings: F32  # (rows, width, 1) rating − global mean; padding: 0
    counts: F32  # (rows,) ratings per row


class _Layout:
    """One side's rows, sorted by length and cut into padded chunks, built once per fit (the
    indexes do not change between iterations, only the factors they gather)."""

    def __init__(self, matrix: sp.csr_matrix, mean: float, rows: I64 | None = None,
                 chunk_cells: int = CHUNK_CELLS) -> None:
        indptr, indices = matrix.indptr, matrix.indices
        self.n_rows, self.n_columns = matrix.shape
        counts = np.diff(indptr).astype(np.int64)
        if rows is None:
            rows = np.flatnonzero(counts > 0)
        rows = rows[counts[rows] > 0]
        rows = rows[np.argsort(counts[rows], kind="stable")]
        centred = (matrix.data - mean).astype(np.float32)
        self.chunks: list[_Chunk] = []
        start = 0
        while start < rows.size:
            # the longest row that fits with this many rows (lengths are sorted)
            stop = start + 1
            while stop < rows.size and (stop - start + 1) * int(counts[rows[stop]]) <= chunk_cells:
                stop += 1
            chunk = rows[start:stop]
            width = int(counts[chunk[-1]])
            offsets = np.arange(width)[None, :]
            valid = offsets < counts[chunk][:, None]
            pos = np.where(valid, indptr[chunk][:, None] + offsets, 0)
            columns = np.where(valid, indices[pos], self.n_columns).astype(np.int32)
            ratings = np.where(valid, centred[pos], 0.0).astype(np.float32)[:, :, None]
            self.chunks.append(_Chunk(chunk, columns, ratings, counts[chunk].astype(np.float32)))
            start = stop

    def split(self, parts: int) -> list[list[_Chunk]]:
        """The chunks dealt to ``parts`` workers, balanced by padded cells."""
        load = np.zeros(parts)
        dealt: list[list[_Chunk]] = [[] for _ in range(parts)]
        for chunk in sorted(self.chunks, key=lambda c: -c.columns.size):
            w = int(np.argmin(load))
            dealt[w].append(chunk)
            load[w] += chunk.columns.size + 40 * chunk.rows.size  # cells + per-row solve
        return dealt


def _conjugate_gradient(a: F32, rhs: F32, x: F32, steps: int) -> F32:
    """``steps`` conjugate-gradient steps on every system ``a x = rhs`` of the batch at once,
    from ``x`` (as ``implicit``'s CG solver, from the previous iteration's solution)."""
    r = rhs - np.matmul(a, x)
    p = r.copy()
    rs = np.einsum("nij,nij->n", r, r)
    for _ in range(steps):
        ap = np.matmul(a, p)
        den = np.einsum("nij,nij->n", p, ap)
        alpha = np.divide(rs, den, out=np.zeros_like(rs), where=den > 0)[:, None, None]
        x += alpha * p
        r -= alpha * ap
        rn = np.einsum("nij,nij->n", r, r)
        beta = np.divide(rn, rs, out=np.zeros_like(rs), where=rs > 0)[:, None, None]
        p = r + beta * p
        rs = rn
    return x


def _solve_chunks(
    chunks: list[_Chunk],
    augmented: F32,
    regularization: float,
    bias_regularization: float,
    out: tuple[F32, F32],
    start: tuple[F32, F32] | None,
    cg_steps: int,
) -> None:
    """The chunks' rows' solutions into ``out`` (factors, bias). ``augmented`` holds one row
    per column of the other side, ``[1, q_j, b_j]``, and a zero row for padding: its Gram
    gives the normal matrix (first k + 1 columns) and ``Σ (1, q_j)·b_j`` (last). Exact solves
    without ``start``; else ``cg_steps`` CG steps from ``start`` (factors, bias)."""
    k1 = augmented.shape[1] - 1  # k + 1 unknowns: the bias and k factors
    diag = np.arange(1, k1)
    factors, bias = out
    for c in chunks:
        q = augmented[c.columns]  # (rows, width, k + 2)
        qt = q.transpose(0, 2, 1)
        gram = np.matmul(qt, q)
        a = gram[:, :k1, :k1]
        rhs = np.matmul(qt[:, :k1], c.ratings) - gram[:, :k1, k1:]
        a[:, diag, diag] += regularization * c.counts[:, None]
        a[:, 0, 0] += bias_regularization
        if start is None or cg_steps <= 0:
            sol = np.linalg.solve(a, rhs)[:, :, 0]
        else:
            x = np.empty((c.rows.size, k1, 1), np.float32)
            x[:, 0, 0] = start[1][c.rows]
            x[:, 1:, 0] = start[0][c.rows]
            sol = _conjugate_gradient(a, rhs, x, cg_steps)[:, :, 0]
        bias[c.rows] = sol[:, 0]
        factors[c.rows] = sol[:, 1:]


def _solve_side(
    layout: _Layout,
    other_factors: F32,
    other_bias: F32,
    regularization: float,
    bias_regularization: float,
    workers: int = 1,
    start: tuple[F32, F32] | None = None,
    cg_steps: int = 0,
) -> tuple[F32, F32]:
    """Every row's solve given the other side's factors (rows without ratings get 0); with
    ``workers`` > 1 the chunks are dealt to that many threads (numpy's batched ``matmul`` and
    ``solve`` release the GIL); each row's result is the same as in one pass."""
    k = other_factors.shape[1]
    augmented = np.zeros((other_factors.shape[0] + 1, k + 2), dtype=np.float32)
    augmented[:-1, 0] = 1.0
    augmented[:-1, 1:-1] = other_factors
    augmented[:-1, -1] = other_bias
    out = (np.zeros((layout.n_rows, k), dtype=np.float32),
           np.zeros(layout.n_rows, dtype=np.float32))
    n_solved = sum(c.rows.size for c in layout.chunks)
    if workers <= 1 or n_solved < PARALLEL_MIN_ROWS:
        _solve_chunks(layout.chunks, augmented, regularization, bias_regularization, out,
                      start, cg_steps)
        return out
    with ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(_solve_chunks, part, augmented, regularization,
                            bias_regularization, out, start, cg_steps)
                for part in layout.split(workers)]
        for job in jobs:
            job.result()
    return out


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
    cg_steps: int = 3,
) -> RatingModel:
    """Fit on a users × items CSR matrix of explicit ratings (stored zeros are not allowed);
    ``workers`` threads share each half-step (default: :func:`default_workers`).

    The first iteration solves exactly; later ones take ``cg_steps`` conjugate-gradient
    steps from the previous iteration's solution (0: exact solves throughout)."""
    workers = default_workers() if workers is None else workers
    rng = np.random.default_rng(seed)
    r = matrix.tocsr()
    n_users, n_items = r.shape
    mean = float(r.data.astype(np.float64).mean()) if r.nnz else 0.0
    users = _Layout(r, mean)
    items = _Layout(r.T.tocsr(), mean)
    item_f = (rng.standard_normal((n_items, factors)) * 0.01).astype(np.float32)
    item_b = np.zeros(n_items, dtype=np.float32)
    user_f = np.zeros((n_users, factors), dtype=np.float32)
    user_b = np.zeros(n_users, dtype=np.float32)
    for it in range(iterations):
        user_f, user_b = _solve_side(users, item_f, item_b, regularization, bias_regularization,
                                     workers, (user_f, user_b) if it else None, cg_steps)
        item_f, item_b = _solve_side(items, user_f, user_b, regularization, bias_regularization,
                                     workers, (item_f, item_b) if it else None, cg_steps)
    return RatingModel(mean, user_b, item_b, user_f, item_f, regularization, bias_regularization)
