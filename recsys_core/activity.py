"""What is happening in the catalogue right now: per-movie event counts over the last day
and the last week of event time, when each movie was first seen, and the event clock.

The reranker (:mod:`recsys_core.rerank`) reads these. "Now" is the event clock: the newest
event time applied so far, not the wall clock, so a replay of old events sees the same
figures as the platform did when they happened. The offline replay feeds every event in
order; the API seeds one from the model bundle (:data:`ACTIVITY_ARRAYS`, the trainer's
last week) and adds the events it reads from the event log after the bundle's data end.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from recsys_core.vocab import Vocabulary

DAY = 86_400.0
WEEK = 7 * DAY
#: bundle ``extra`` arrays with the trainer's view of activity at its data end: the movie
#: index and time of each event of the last week, and each movie's first event time
#: (NaN: never seen)
ACTIVITY_ARRAYS = ("activity_items", "activity_times", "activity_first_seen")


class MovieActivity:
    """Sliding day and week counts per movie id, first-seen times, and the event clock."""

    def __init__(self) -> None:
        self._pos: dict[str, int] = {}
        self._day = np.zeros(0)
        self._week = np.zeros(0)
        self._first = np.zeros(0)
        self._day_q: deque[tuple[float, int]] = deque()
        self._week_q: deque[tuple[float, int]] = deque()
        self.now = float("-inf")
        self._lookups: dict[int, npt.NDArray[np.int64]] = {}

    def _position(self, movie_id: str) -> int:
        pos = self._pos.get(movie_id)
        if pos is None:
            pos = self._pos[movie_id] = len(self._pos)
            if pos >= self._day.size:
                grow = max(1024, 2 * self._day.size)
                self._day = np.concatenate([self._day, np.zeros(grow)])
                self._week = np.concatenate([self._week, np.zeros(grow)])
                self._first = np.concatenate([self._first, np.full(grow, np.nan)])
        return pos

    def add(self, movie_id: str, ts: float) -> None:
        """One applied event; moves the clock to ``ts`` when it is newer."""
        pos = self._position(movie_id)
        first = self._first[pos]
        if not first <= ts:  # NaN (never seen) or later than this event
            self._first[pos] = ts
        if ts > self.now:
            self.now = ts
        if ts >= self.now - WEEK:
            self._week[pos] += 1
            self._week_q.append((ts, pos))
            if ts >= self.now - DAY:
                self._day[pos] += 1
                self._day_q.append((ts, pos))
        self._expire()

    def seen(self, movie_id: str, ts: float) -> None:
        """A first-seen time from before the windows (a seed), without counting an event."""
        pos = self._position(movie_id)
        if not self._first[pos] <= ts:
            self._first[pos] = ts

    def _expire(self) -> None:
        for q, counts, span in ((self._day_q, self._day, DAY), (self._week_q, self._week, WEEK)):
            limit = self.now - span
            while q and q[0][0] < limit:
                _, pos = q.popleft()
                counts[pos] -= 1

    def positions(self, movies: Vocabulary) -> npt.NDArray[np.int64]:
        """Each of ``movies``' position here (movies never seen get one), cached per
        vocabulary object."""
        key = id(movies)
        cached = self._lookups.get(key)
        if cached is None or cached.size != len(movies):
            cached = np.fromiter((self._position(m) for m in movies.ids), dtype=np.int64,
                                 count=len(movies))
            self._lookups = {key: cached}
        return cached

    def positions_of(self, movie_ids: list[str]) -> npt.NDArray[np.int64]:
        return np.asarray([self._position(m) for m in movie_ids], dtype=np.int64)

    def features(
        self, positions: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(days since first seen, NaN when never; events in the last day; in the last
        week) at the given positions."""
        known = (self.now - self._first[positions]) / DAY
        return known, self._day[positions], self._week[positions]

    @classmethod
    def from_arrays(cls, movies: Vocabulary, items: npt.NDArray[np.int64],
                    times: npt.NDArray[np.float64],
                    first_seen: npt.NDArray[np.float64]) -> MovieActivity:
        """Seeded from a bundle's :data:`ACTIVITY_ARRAYS`."""
        out = cls()
        ids = list(movies.ids)
        for i, ts in enumerate(first_seen.tolist()):
            if ts == ts:  # not NaN
                out.seen(ids[i], ts)
        for i, ts in zip(items.tolist(), times.tolist(), strict=True):
            out.add(ids[i], ts)
        return out


def activity_arrays(
    movie_idx: npt.NDArray[np.int64], times: npt.NDArray[np.float64], n_items: int
) -> dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]:
    """The trainer's :data:`ACTIVITY_ARRAYS` from every training event (movie index, time)."""
    first = np.full(n_items, np.nan)
    if movie_idx.size:
        order = np.argsort(times, kind="stable")
        idx, ts = movie_idx[order], times[order]
        # the first occurrence of each movie in time order
        uniq, at = np.unique(idx, return_index=True)
        first[uniq] = ts[at]
        recent = ts >= ts[-1] - WEEK
        idx, ts = idx[recent], ts[recent]
    else:
        idx, ts = movie_idx, times
    return {
        "activity_items": idx.astype(np.int64),
        "activity_times": ts.astype(np.float64),
        "activity_first_seen": first,
    }
