"""Popularity, optionally with exponential time decay, scaled to [0, 1]; and popularity by
stage of a user's history."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recsys_core.scoring import stage_of
from training.matrices import user_sequences


def fit_popularity(
    item_idx: npt.NDArray[np.int64],
    timestamps: npt.NDArray[np.float64],
    n_items: int,
    half_life_days: float | None = None,
    now: float | None = None,
) -> npt.NDArray[np.float32]:
    """``log1p`` of each movie's (decayed) interaction count, divided by the maximum."""
    if half_life_days:
        ref = float(timestamps.max()) if now is None else now
        age_days = (ref - timestamps) / 86400.0
        weights = np.power(0.5, np.clip(age_days, 0, None) / half_life_days)
    else:
        weights = np.ones(item_idx.size)
    counts = np.bincount(item_idx, weights=weights, minlength=n_items)
    scaled = np.log1p(counts)
    top = float(scaled.max()) if scaled.size else 0.0
    return (scaled / top if top > 0 else scaled).astype(np.float32)


def fit_stage_popularity(
    user_idx: npt.NDArray[np.int64],
    item_idx: npt.NDArray[np.int64],
    timestamps: npt.NDArray[np.float64],
    n_items: int,
    per_octave: float = 2.0,
    smoothing: float = 2.0,
) -> npt.NDArray[np.float32]:
    """What people rate at each stage of their history: row ``s`` is the log share of each
    movie among the interactions made when their user had ``n`` earlier ones with
    ``stage_of(n) == s`` (:func:`recsys_core.scoring.stage_of`), the counts of neighbouring
    stages mixed in with weight ``exp(-|s - s'| / smoothing)``. New users rate the famous
    films the sign-up pages show; users with long histories rate other movies."""
    n = item_idx.size
    if n == 0:
        return np.full((1, n_items), np.log(1e-6), dtype=np.float32)
    seq = user_sequences(np.asarray(user_idx, dtype=np.int64), timestamps)
    position = np.empty(n, dtype=np.int64)
    position[seq.order] = seq.position
    stage = stage_of(position, per_octave)
    n_stages = int(stage.max()) + 1
    counts = np.zeros((n_stages, n_items))
    np.add.at(counts, (stage, item_idx), 1.0)
    s = np.arange(n_stages)
    kernel = (np.exp(-np.abs(s[:, None] - s[None, :]) / smoothing) if smoothing > 0
              else np.eye(n_stages))
    mixed = kernel @ counts
    share = mixed / np.maximum(mixed.sum(axis=1, keepdims=True), 1e-12)
    return np.log(share + 1e-6).astype(np.float32)
