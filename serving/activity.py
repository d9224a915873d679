"""The movie activity the reranker reads (:mod:`recsys_core.activity`), kept current in the
API process: seeded from the serving bundle (the trainer's last week and first-seen times)
and fed by a task that follows the event log stream (``Keys.event_log()``), which holds
every applied event once. Events up to the bundle's data end are already in the seed; only
newer ones are added. A new model version reseeds and re-adds the followed events newer
than its own data end (kept for that, up to :data:`MAX_BUFFERED`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from datetime import datetime

import redis.asyncio as aioredis

from recsys_core.activity import ACTIVITY_ARRAYS, MovieActivity
from recsys_core.artifacts import ModelBundle
from serving import metrics

log = logging.getLogger(__name__)

#: followed events kept for a reseed; a trainer that falls further behind than this loses
#: the oldest of them from the counts until it publishes
MAX_BUFFERED = 200_000


class LiveActivity:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._activity = MovieActivity()
        self._version: int | None = None
        self._since = float("-inf")
        #: followed events newer than the bundle's data end (re-added after a reseed)
        self._recent: deque[tuple[str, float]] = deque(maxlen=MAX_BUFFERED)
        self.followed = 0
        #: set once a model with a reranker asks for the activity; until then nothing is
        #: followed (a model without trees never reads it)
        self.enabled = False

    def for_bundle(self, bundle: ModelBundle) -> MovieActivity:
        """The activity seeded from this bundle (reseeded when the version changes)."""
        self.enabled = True
        if self._version != bundle.version:
            with self._lock:
                if self._version != bundle.version:
                    self._reseed(bundle)
        return self._activity

    def _reseed(self, bundle: ModelBundle) -> None:
        x = bundle.extra
        if all(name in x for name in ACTIVITY_ARRAYS):
            fresh = MovieActivity.from_arrays(bundle.movies, *(x[n] for n in ACTIVITY_ARRAYS))
        else:
            fresh = MovieActivity()
        end = bundle.manifest.get("data_window", {}).get("to_timestamp")
        since = float(end) if end is not None else float("-inf")
        self._recent = deque(((m, t) for m, t in self._recent if t > since),
                             maxlen=MAX_BUFFERED)
        for mid, ts in self._recent:
            fresh.add(mid, ts)
        self._activity, self._since, self._version = fresh, since, bundle.version

    def add(self, movie_id: str, ts: float) -> None:
        with self._lock:
            if ts > self._since:
                self._recent.append((movie_id, ts))
                self._activity.add(movie_id, ts)
            self.followed += 1


def entry_event(fields: dict[bytes, bytes]) -> tuple[str, float] | None:
    """(movie id, event time) of an event-log entry; None when it has neither."""
    _, _, payload = fields.get(b"e", b"").partition(b" ")
    try:
        data = json.loads(payload)
        at = data["occurred_at"]
        if isinstance(at, int | float):
            return str(data["movie_id"]), float(at)
        when = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
        return str(data["movie_id"]), when.timestamp()
    except (ValueError, KeyError, TypeError):
        return None


async def follow_event_log(url: str, stream: str, live: LiveActivity,
                           block_ms: int = 1000) -> None:
    """Add every event-log entry to ``live``, from the oldest one retained, once ``live``
    is enabled; reconnects after errors (a lost connection resumes after the last entry
    read)."""
    while not live.enabled:
        await asyncio.sleep(0.5)
    last = b"0-0"
    backoff = 0.5
    while True:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            while True:
                found = await client.xread({stream: last}, count=5000, block=block_ms)
                backoff = 0.5
                for _, entries in found or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        event = entry_event(fields)
                        if event is not None:
                            live.add(*event)
                        metrics.ACTIVITY_FOLLOWED.inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep following whatever Redis does
            log.info("event log follower lost its connection (%s); retrying", exc)
        finally:
            await client.aclose()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)
