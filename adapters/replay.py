"""The replay tool's core, without Kafka: which ratings, in what order, as which events, when.

Ratings are replayed in time order, stable within equal timestamps (the order of
:func:`training.evaluation.splits.temporal_split`, so ``fraction=0.8`` replays exactly the
events protocol C replays). Event ids are derived from the rating itself, so replaying the
same slice twice produces the same ids and the stream's dedupe drops the second copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from recsys_core.errors import InvalidEvent
from recsys_core.events import RatingEvent, validate_event

#: with ``speedup``, no single wait is longer than this (idle nights must not stall a demo)
DEFAULT_MAX_GAP_SECONDS = 2.0
#: a pacer that falls further behind than this restarts its schedule instead of bursting
DEFAULT_MAX_LAG_SECONDS = 1.0


def order_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by timestamp, stable within equal timestamps, with a fresh index."""
    return interactions.sort_values("timestamp", kind="stable").reset_index(drop=True)


def select_interactions(
    interactions: pd.DataFrame,
    *,
    fraction: float | None = None,
    from_time: datetime | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """The rows to replay, in time order.

    ``fraction`` skips the oldest share of the rows (0.8 keeps the newest 20%);
    ``from_time`` keeps rows at or after that time; ``limit`` keeps the first ``limit``.
    """
    if fraction is not None and from_time is not None:
        raise ValueError("give fraction or from_time, not both")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    ordered = order_interactions(interactions)
    if fraction is not None:
        ordered = ordered.iloc[int(round(fraction * len(ordered))):]
    elif from_time is not None:
        if from_time.tzinfo is None:
            raise ValueError("from_time needs a timezone")
        ordered = ordered[ordered["timestamp"].to_numpy() >= from_time.timestamp()]
    if limit is not None:
        ordered = ordered.iloc[:limit]
    return ordered.reset_index(drop=True)


def replay_event_id(dataset: str, user_id: str, movie_id: str, timestamp: int) -> str:
    """The same rating always gets the same id, e.g. ``ml-100k:196:242:881250949``."""
    name = "_".join(dataset.split()) or "dataset"
    return f"{name}:{user_id}:{movie_id}:{timestamp}"


def rating_events(
    dataset: str,
    rows: pd.DataFrame,
    on_invalid: Callable[[int, InvalidEvent], None] | None = None,
) -> Iterator[RatingEvent]:
    """One validated :class:`RatingEvent` per row. A row that fails validation goes to
    ``on_invalid(position, error)``, or raises :class:`InvalidEvent` when there is none."""
    columns = zip(rows["user_id"], rows["movie_id"], rows["rating"], rows["timestamp"],
                  strict=True)
    for position, (user, movie, rating, ts) in enumerate(columns):
        seconds = int(ts)
        data = {
            "event_id": replay_event_id(dataset, str(user), str(movie), seconds),
            "occurred_at": datetime.fromtimestamp(seconds, tz=UTC),
            "user_id": str(user),
            "movie_id": str(movie),
            "rating": float(rating),
        }
        try:
            event = validate_event("rating", data)
        except InvalidEvent as exc:
            if on_invalid is None:
                raise
            on_invalid(position, exc)
            continue
        if isinstance(event, RatingEvent):
            yield event


class Pacer:
    """Decides when each event is sent.

    With ``rate``, events are spaced ``1/rate`` seconds apart; with ``speedup``, by the
    dataset's own gap divided by ``speedup``, each gap capped at ``max_gap``; with neither,
    never waits. The schedule is absolute, so time spent sending does not slow the average
    rate, but a pacer more than ``max_lag`` seconds behind restarts from now (no burst).
    """

    def __init__(
        self,
        rate: float | None = None,
        speedup: float | None = None,
        *,
        max_gap: float = DEFAULT_MAX_GAP_SECONDS,
        max_lag: float = DEFAULT_MAX_LAG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate is not None and speedup is not None:
            raise ValueError("give rate or speedup, not both")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate:g}")
        if speedup is not None and speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {speedup:g}")
        if max_gap < 0:
            raise ValueError(f"max-gap must be >= 0, got {max_gap:g}")
        self.rate = rate
        self.speedup = speedup
        self.max_gap = max_gap
        self.max_lag = max_lag
        self._clock = clock
        self._sleep = sleep
        self._due: float | None = None
        self._previous: float | None = None

    def gap(self, previous: float, current: float) -> float:
        """Seconds between sending an event of time ``previous`` and one of ``current``."""
        if self.rate is not None:
            return 1.0 / self.rate
        if self.speedup is not None:
            return min(max(current - previous, 0.0) / self.speedup, self.max_gap)
        return 0.0

    def wait(self, event_time: float) -> float:
        """Sleep until the event of time ``event_time`` is due; the seconds slept."""
        if self.rate is None and self.speedup is None:
            return 0.0
        now = self._clock()
        if self._due is None or self._previous is None:
            self._due = now
        else:
            self._due += self.gap(self._previous, event_time)
            if self._due < now - self.max_lag:
                self._due = now
        self._previous = event_time
        delay = self._due - now
        if delay <= 0:
            return 0.0
        self._sleep(delay)
        return delay


@dataclass
class ReplayRun:
    """What :func:`replay` handed to ``send``."""

    submitted: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    stopped: bool = False


def replay(
    events: Iterable[RatingEvent],
    send: Callable[[RatingEvent], object],
    pacer: Pacer,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int], None] | None = None,
) -> ReplayRun:
    """Pace each event and hand it to ``send`` until done or ``should_stop()``;
    ``progress(submitted)`` is called after each event."""
    run = ReplayRun()
    for event in events:
        if should_stop():
            run.stopped = True
            break
        pacer.wait(event.timestamp)
        if should_stop():  # stopped while waiting
            run.stopped = True
            break
        send(event)
        run.submitted += 1
        if run.first_time is None:
            run.first_time = event.occurred_at
        run.last_time = event.occurred_at
        if progress is not None:
            progress(run.submitted)
    return run


class Deliveries:
    """Acks and failures, counted from the producer's I/O thread."""

    def __init__(self) -> None:
        self.acked = 0
        self.failed = 0
        self.first_error: str | None = None
        self._lock = threading.Lock()

    def ok(self, _metadata: object = None) -> None:
        with self._lock:
            self.acked += 1

    def error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"
