"""A user's interaction history as the scorer sees it: parallel arrays, oldest first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class UserHistory:
    """Movies a user interacted with (model indexes), oldest first, one row per movie.

    ``confidence`` follows :mod:`recsys_core.confidence`; ``ratings`` is NaN where the user
    only watched; ``timestamps`` are seconds since the epoch.
    """

    item_idx: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float64]
    timestamps: npt.NDArray[np.float64]
    ratings: npt.NDArray[np.float64]

    @classmethod
    def empty(cls) -> UserHistory:
        z = np.zeros(0)
        return cls(np.zeros(0, dtype=np.int64), z, z.copy(), z.copy())

    @classmethod
    def build(
        cls,
        item_idx: npt.ArrayLike,
        confidence: npt.ArrayLike,
        timestamps: npt.ArrayLike | None = None,
        ratings: npt.ArrayLike | None = None,
    ) -> UserHistory:
        idx = np.asarray(item_idx, dtype=np.int64)
        conf = np.asarray(confidence, dtype=np.float64)
        ts = (
            np.arange(idx.size, dtype=np.float64)
            if timestamps is None
            else np.asarray(timestamps, dtype=np.float64)
        )
        rt = np.full(idx.size, np.nan) if ratings is None else np.asarray(ratings, np.float64)
        if not (idx.shape == conf.shape == ts.shape == rt.shape):
            raise ValueError("history arrays must have the same length")
        order = np.argsort(ts, kind="stable")
        return cls(idx[order], conf[order], ts[order], rt[order])

    def __len__(self) -> int:
        return int(self.item_idx.size)

    def recency_ranks(self) -> npt.NDArray[np.float64]:
        """How many distinct timestamps are newer than each interaction's: 0 for every
        interaction of the newest second. Interactions of the same second share a rank, since
        their order is noise (MovieLens users rated a page at a time; the live state keeps
        movies in a hash)."""
        n = len(self)
        if n == 0:
            return np.zeros(0)
        newer = np.ones(n, dtype=np.float64)
        newer[:-1] = self.timestamps[1:] != self.timestamps[:-1]
        newer[-1] = 0.0
        return np.cumsum(newer[::-1])[::-1]

    def recency_weights(self, decay: float, last_n: int) -> npt.NDArray[np.float64]:
        """``decay ** rank`` over :meth:`recency_ranks` (rank 0: the newest second); 0 from
        rank ``last_n`` on."""
        rank = self.recency_ranks()
        w = np.power(decay, rank)
        w[rank >= last_n] = 0.0
        return w
