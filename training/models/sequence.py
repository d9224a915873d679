"""Sequence model: which movie a user rates next, given the movies they rated last.

Every training interaction with earlier ones of the same user is one example: its context
``x`` holds the user's previous movies, each weighted ``decay ** rank`` where the rank counts
the distinct timestamps newer than the movie's within the context (movies rated in the same
second share a rank: MovieLens users rated a page at a time, and the order within a second
is noise), up to ``length`` ranks back; its target ``y`` is the movie itself. The model is
the ridge regression ``B = (XᵀX + λI)⁻¹ XᵀY``, kept as the top neighbours of each movie like
EASE. The scorer applies it to the user's newest movies with the same weights
(:func:`recsys_core.scoring.component_scores`, component ``sequence``).

The solve is O(n³) in movies, so the model covers the ``max_items`` movies with the most
interactions; the context reaches at most ``max_lag`` interactions back, and only the newest
``max_events`` interactions are read (what people rate next drifts with the catalogue).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp

from training.matrices import stable_order
from training.models.ease import NeighborModel, _top_n_rows


def context_matrix(
    user_idx: npt.NDArray[np.int64],
    item_idx: npt.NDArray[np.int64],
    timestamps: npt.NDArray[np.float64],
    n_items: int,
    decay: float = 0.8,
    length: int = 20,
    max_lag: int | None = None,
) -> tuple[sp.csr_matrix, npt.NDArray[np.int64]]:
    """``(X, y)``: one row per interaction that has an earlier one of the same user, its
    weighted context over movies and its movie. Rows follow (user, time) order, ties in the
    order given."""
    max_lag = 2 * length if max_lag is None else max_lag
    order = stable_order(timestamps, user_idx)  # ties in the order given
    u, i, t = user_idx[order], item_idx[order], timestamps[order]
    n = u.size
    # index of each interaction's second, counted over all users (ranks are differences)
    second = np.cumsum(np.r_[0, (u[1:] != u[:-1]) | (t[1:] != t[:-1])]) if n else np.zeros(0)
    rows, cols, vals = [], [], []
    for lag in range(1, min(max_lag, n - 1) + 1):
        p = np.arange(lag, n)
        q = p - lag
        rank = second[p - 1] - second[q]
        keep = (u[p] == u[q]) & (rank < length)
        if not keep.any():
            break  # no user has this many interactions
        rows.append(p[keep])
        cols.append(i[q[keep]])
        vals.append(np.power(decay, rank[keep].astype(np.float64)))
    if not rows:
        return sp.csr_matrix((0, n_items)), np.zeros(0, dtype=np.int64)
    r = np.concatenate(rows)
    has = rows[0]  # every interaction with a context has one at lag 1 (rank 0)
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[has] = np.arange(has.size)
    x = sp.csr_matrix((np.concatenate(vals), (row_of[r], np.concatenate(cols))),
                      shape=(has.size, n_items))
    return x, i[has].astype(np.int64)


def _newest(timestamps: npt.NDArray[np.float64], count: int) -> npt.NDArray[np.int64]:
    """Positions of the ``count`` newest timestamps, in input order; among equal times at the
    cut the later positions (as the last ``count`` of a stable sort by time), without
    sorting them all."""
    cut = timestamps.size - count
    threshold = np.partition(timestamps, cut)[cut]
    newer = np.flatnonzero(timestamps > threshold)
    at = np.flatnonzero(timestamps == threshold)
    return np.sort(np.concatenate([newer, at[at.size - (count - newer.size):]]))


def fit_sequence(
    user_idx: npt.NDArray[np.int64],
    item_idx: npt.NDArray[np.int64],
    timestamps: npt.NDArray[np.float64],
    n_items: int,
    decay: float = 0.8,
    length: int = 20,
    regularization: float = 1000.0,
    top_n: int = 200,
    max_items: int = 2000,
    max_lag: int | None = None,
    max_events: int | None = 500_000,
) -> NeighborModel:
    """Ridge regression of the next movie on the decayed recent ones (see the module), over
    the newest ``max_events`` interactions (all: None)."""
    user_idx = np.asarray(user_idx, dtype=np.int64)
    item_idx = np.asarray(item_idx, dtype=np.int64)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if max_events is not None and item_idx.size > max_events:
        newest = _newest(timestamps, max_events)
        user_idx, item_idx, timestamps = user_idx[newest], item_idx[newest], timestamps[newest]
    counts = np.bincount(item_idx, minlength=n_items)
    head = np.flatnonzero(counts > 0)
    if head.size > max_items:
        head = np.sort(head[np.argsort(-counts[head], kind="stable")[:max_items]])
    empty = NeighborModel(np.zeros(n_items + 1, np.int64), np.zeros(0, np.int32),
                          np.zeros(0, np.float32), "sequence")
    if head.size < 2:
        return empty
    local = np.full(n_items, -1, dtype=np.int64)
    local[head] = np.arange(head.size)
    # drop interactions outside the head: they can be neither context nor target
    keep = local[item_idx] >= 0
    x, y = context_matrix(user_idx[keep], local[item_idx[keep]], timestamps[keep], head.size,
                          decay, length, max_lag)
    if x.shape[0] == 0:
        return empty
    target = sp.csr_matrix((np.ones(y.size), (np.arange(y.size), y)),
                           shape=(y.size, head.size))
    # float32 halves the solve; the ridge keeps it well conditioned
    gram = (x.T @ x).toarray().astype(np.float32)
    gram[np.diag_indices_from(gram)] += regularization
    rhs = (x.T @ target).toarray().astype(np.float32)
    b = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram, overwrite_a=True), rhs,
                               overwrite_b=True).astype(np.float64)
    sub = _top_n_rows(b, top_n, overwrite=True)
    lengths = np.zeros(n_items, dtype=np.int64)
    lengths[head] = np.diff(sub.indptr)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return NeighborModel(indptr, head[sub.indices].astype(np.int32), sub.scores, "sequence")
