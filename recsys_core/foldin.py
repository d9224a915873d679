"""Fold-in: a user's ALS vector from their interactions with the item factors held fixed.

``x_u = (YᵀY + λI + Σ_i (c_ui − 1) y_i y_iᵀ)⁻¹ Σ_i c_ui y_i``, the same closed form that
``implicit`` solves per user (its ``recalculate_user``). ``YᵀY`` is computed once per model
version (:func:`gramian`); a fold-in then costs O(n·k² + k³) for n interactions.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.floating]
IdxArray = npt.NDArray[np.integer]


def gramian(item_factors: FloatMatrix) -> npt.NDArray[np.float64]:
    """``YᵀY`` in float64, computed once per model version."""
    y = np.asarray(item_factors, dtype=np.float64)
    return y.T @ y


def fold_in_user(
    item_factors: FloatMatrix,
    yty: npt.NDArray[np.float64],
    item_idx: IdxArray,
    confidence: npt.ArrayLike,
    regularization: float,
) -> npt.NDArray[np.float32]:
    """The user's vector for the given interactions (indexes into ``item_factors``).

    Indexes must be valid rows: unlike ``implicit``, -1 is refused rather than read as the
    last row. An empty history gives the zero vector.
    """
    idx = np.asarray(item_idx, dtype=np.int64)
    conf = np.asarray(confidence, dtype=np.float64)
    k = item_factors.shape[1]
    if idx.shape != conf.shape:
        raise ValueError("item_idx and confidence must have the same length")
    if idx.size == 0:
        return np.zeros(k, dtype=np.float32)
    if idx.min() < 0 or idx.max() >= item_factors.shape[0]:
        raise IndexError("item index out of range of the item factors")
    y = np.asarray(item_factors[idx], dtype=np.float64)
    a = yty + regularization * np.eye(k) + (y.T * (conf - 1.0)) @ y
    b = y.T @ conf
    return np.linalg.solve(a, b).astype(np.float32)
