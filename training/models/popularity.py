"""Popularity, optionally with exponential time decay, scaled to [0, 1]."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


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
