"""What is happening in the catalogue right now: per-movie event counts over the last day
and the last week of event time, when each movie was first seen, and the event clock.

The reranker (:mod:`recsys_core.rerank`) reads these. "Now" is the event clock: the newest
event time applied so far, not the wall clock, so a replay of old events sees the same
figures as the platform did when they happened. The offline replay feeds every event in
order; the API seeds one from the model bundle (:data:`ACTIVITY_ARRAYS`, the trainer's
last week) and adds the events it reads from the event log after the bundle's data end.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recsys_core.vocab import Vocabulary

DAY = 86_400.0
WEEK = 7 * DAY
HOUR = 3600.0
#: "the last day": the current hour and the 24 before it; "the last week": the current
#: day (UTC) and the 7 before it
DAY_BUCKETS = 25
WEEK_BUCKETS = 8
#: bundle ``extra`` arrays with the trainer's view of activity at its data end: the movie
#: index and time of each event of the last week, and each movie's first event time
#: (NaN: never seen)
ACTIVITY_ARRAYS = ("activity_items", "activity_times", "activity_first_seen")


def counted_since(now: float) -> float:
    """The oldest event time that still counts at ``now`` (the week's first bucket)."""
    return (now // DAY - (WEEK_BUCKETS - 1)) * DAY


class _Ring:
    """Event counts per movie in the newest ``slots`` time buckets of ``span`` seconds (a
    ring of dense rows; memory is slots × movies, whatever the event rate)."""

    def __init__(self, span: float, slots: int) -> None:
        self.span, self.slots = span, slots
        self.counts = np.zeros((slots, 0), dtype=np.float32)
        self.bucket = np.full(slots, -1, dtype=np.int64)  # the bucket each row holds

    def grow(self, size: int) -> None:
        extra = np.zeros((self.slots, size - self.counts.shape[1]), dtype=np.float32)
        self.counts = np.concatenate([self.counts, extra], axis=1)

    def add(self, pos: int, ts: float, now: float) -> None:
        b = int(ts // self.span)
        if b <= int(now // self.span) - self.slots:
            return  # older than the window
        row = b % self.slots
        if self.bucket[row] != b:
            if self.bucket[row] > b:
                return  # the row holds a newer bucket: this one has left the window
            self.counts[row] = 0.0
            self.bucket[row] = b
        self.counts[row, pos] += 1.0

    def total(self, positions: npt.NDArray[np.int64], now: float) -> npt.NDArray[np.float64]:
        live = self.bucket > int(now // self.span) - self.slots
        out: npt.NDArray[np.float64] = self.counts[live][:, positions].sum(axis=0,
                                                                           dtype=np.float64)
        return out


class MovieActivity:
    """Per movie id: events in the last day and the last week, first-seen times; and the
    event clock.

    Counts are kept in time buckets, so memory does not grow with the event rate: "the last
    day" is the current hour and the 24 before it, "the last week" the current day (UTC)
    and the 7 before it."""

    def __init__(self) -> None:
        self._pos: dict[str, int] = {}
        self._first = np.zeros(0)
        self._day = _Ring(HOUR, DAY_BUCKETS)
        self._week = _Ring(DAY, WEEK_BUCKETS)
        self.now = float("-inf")
        self._lookups: dict[int, npt.NDArray[np.int64]] = {}

    def _position(self, movie_id: str) -> int:
        pos = self._pos.get(movie_id)
        if pos is None:
            pos = self._pos[movie_id] = len(self._pos)
            if pos >= self._first.size:
                size = self._first.size + max(1024, self._first.size)
                self._first = np.concatenate([self._first,
                                              np.full(size - self._first.size, np.nan)])
                self._day.grow(size)
                self._week.grow(size)
        return pos

    def add(self, movie_id: str, ts: float) -> None:
        """One applied event; moves the clock to ``ts`` when it is newer."""
        pos = self._position(movie_id)
        first = self._first[pos]
        if not first <= ts:  # NaN (never seen) or later than this event
            self._first[pos] = ts
        if ts > self.now:
            self.now = ts
        self._day.add(pos, ts, self.now)
        self._week.add(pos, ts, self.now)

    def seen(self, movie_id: str, ts: float) -> None:
        """A first-seen time from before the windows (a seed), without counting an event."""
        pos = self._position(movie_id)
        if not self._first[pos] <= ts:
            self._first[pos] = ts

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
        return (known, self._day.total(positions, self.now),
                self._week.total(positions, self.now))

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
        recent = ts >= counted_since(float(ts[-1]))
        idx, ts = idx[recent], ts[recent]
    else:
        idx, ts = movie_idx, times
    return {
        "activity_items": idx.astype(np.int64),
        "activity_times": ts.astype(np.float64),
        "activity_first_seen": first,
    }
