"""The API's view of Redis: one round trip per request for a user's state, and a short
circuit breaker so that, while Redis is down, requests answer from the model alone at once
instead of each waiting for a timeout."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
import redis.asyncio as aioredis

from adapters.redis_store import UserSnapshot, UserStateStore, snapshot
from recsys_core.keys import Keys
from recsys_core.names import split_people
from serving import metrics

log = logging.getLogger(__name__)

#: every error of the Redis client (``ResponseError`` and its ``OutOfMemoryError``,
#: ``ExecAbortError``, ``ReadOnlyError``; ``ConnectionError`` and its ``BusyLoadingError``;
#: ``TimeoutError``, ...), of the socket, and asyncio's timeout: each one means "state store
#: unavailable" (reads fall back, nothing answers 500)
REDIS_ERRORS = (redis.RedisError, OSError, TimeoutError)
#: how often one kind of Redis error is logged at most (every failure is counted)
LOG_EVERY_SECONDS = 10.0


class StateUnavailable(Exception):
    """Redis could not be reached, was recently found down, or refused the command."""


class StateReader:
    def __init__(self, url: str, keys: Keys, timeout: float, cap: int = 500,
                 open_seconds: float = 1.0) -> None:
        client = redis.Redis.from_url(url, socket_timeout=timeout,
                                      socket_connect_timeout=timeout, retry_on_timeout=False,
                                      health_check_interval=0)
        self.store = UserStateStore(client, keys, cap=cap)
        #: the request path reads with asyncio: the event loop scores other requests while
        #: one waits on Redis
        self.aclient = aioredis.Redis.from_url(url, socket_timeout=timeout,
                                               socket_connect_timeout=timeout,
                                               retry_on_timeout=False)
        self.keys = keys
        self.open_seconds = open_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._served: dict[str, str] = {}  # user → top-10 served, not yet written
        self._logged: dict[str, float] = {}  # error kind → quiet until
        #: the epoch of the data set last read (see :meth:`user_epoch_async`)
        self.epoch: str | None = None
        #: called when the epoch changes (the app drops its kept answers)
        self.on_reset: Callable[[], None] = lambda: None

    @property
    def client(self) -> redis.Redis:
        return self.store.r

    def _check_open(self) -> None:
        if time.monotonic() < self._down_until:
            raise StateUnavailable("Redis was unreachable moments ago")

    def _failed(self, exc: BaseException) -> StateUnavailable:
        """Count and log (once per LOG_EVERY_SECONDS and kind) a failed command; open the
        breaker unless Redis itself answered with the error (out of memory, read-only, a
        wrong type: it is reachable, and reads may still work)."""
        now = time.monotonic()
        kind = type(exc).__name__
        with self._lock:
            if not isinstance(exc, redis.ResponseError):
                self._down_until = now + self.open_seconds
            quiet = now < self._logged.get(kind, 0.0)
            if not quiet:
                self._logged[kind] = now + LOG_EVERY_SECONDS
        metrics.DEPENDENCY_ERRORS.labels("redis").inc()
        if not quiet:
            log.warning("Redis unavailable (%s): %s", kind, exc)
        return StateUnavailable(str(exc) or kind)

    def _call(self, fn: Any, *args: Any) -> Any:
        self._check_open()
        try:
            return fn(*args)
        except REDIS_ERRORS as exc:
            raise self._failed(exc) from exc

    async def user_async(self, user_id: str, factors: int) -> UserSnapshot:
        """:meth:`user` on the asyncio client (one MULTI round trip)."""
        return (await self.user_epoch_async(user_id, factors))[0]

    async def _read(self, user_id: str, transaction: bool) -> list[Any]:
        pipe = self.aclient.pipeline(transaction=transaction)
        pipe.get(self.keys.epoch())
        self.store.read_commands(pipe, user_id)
        return list(await pipe.execute())

    async def user_epoch_async(self, user_id: str, factors: int
                               ) -> tuple[UserSnapshot, str | None]:
        """The user's state and the epoch of the data set it was read from, in one MULTI
        round trip. The epoch is None when the state cannot be compared with another read:
        the data set has no epoch yet (it was just flushed or restarted; one is created for
        the next reads) or Redis is full (it refuses MULTI, so the keys are read one by one,
        not atomically)."""
        self._check_open()
        try:
            try:
                epoch, *replies = await self._read(user_id, transaction=True)
            except redis.OutOfMemoryError:
                epoch, *replies = await self._read(user_id, transaction=False)
                epoch = None
            else:
                if epoch is None:
                    await self.ensure_epoch()
        except REDIS_ERRORS as exc:
            raise self._failed(exc) from exc
        if epoch is not None:
            self._seen_epoch(epoch.decode())
        return snapshot(*replies, factors=factors), self.epoch if epoch is not None else None

    async def ensure_epoch(self) -> str | None:
        """The data set's epoch, created when missing (``SET NX``); None when Redis cannot
        say. A changed epoch calls :attr:`on_reset` (drop every kept answer)."""
        try:
            pipe = self.aclient.pipeline(transaction=True)
            pipe.set(self.keys.epoch(), uuid.uuid4().hex, nx=True)
            pipe.get(self.keys.epoch())
            _, epoch = await pipe.execute()
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return None
        if epoch is None:
            return None
        self._seen_epoch(epoch.decode())
        return self.epoch

    def _seen_epoch(self, epoch: str) -> None:
        if epoch != self.epoch:
            if self.epoch is not None:
                log.warning("Redis data set changed (epoch %s → %s): it was flushed or "
                            "restarted; every kept answer is dropped", self.epoch, epoch)
                self.on_reset()
            self.epoch = epoch

    def remember_served(self, user_id: str, movie_ids: list[str]) -> None:
        """Keep the top-10 just served for an hour: the stream counts a later event for one
        of them as a live hit (live HR@10). Written by :meth:`flush_served` with the others
        of the moment in one pipeline, not one round trip per request."""
        if movie_ids:
            self._served[user_id] = ",".join(movie_ids)

    async def flush_served(self) -> int:
        """Write the served lists noted since the last flush; best effort (failures and an
        open breaker drop them). Returns how many were written."""
        if not self._served:
            return 0
        batch, self._served = self._served, {}
        if time.monotonic() < self._down_until:
            return 0
        try:
            pipe = self.aclient.pipeline(transaction=False)
            for user_id, joined in batch.items():
                pipe.set(self.keys.served(user_id), joined, ex=3600)
            await pipe.execute()
        except REDIS_ERRORS:
            return 0
        return len(batch)

    async def close(self) -> None:
        await self.aclient.aclose()
        self.client.close()

    def user(self, user_id: str, factors: int) -> UserSnapshot:
        snapshots: list[UserSnapshot] = self._call(
            lambda: self.store.read([user_id], factors, seen=True))
        return snapshots[0]

    def exists(self, user_id: str) -> bool:
        return bool(self._call(self.client.exists, self.keys.meta(user_id)))

    def write_vector(self, user_id: str, vector: npt.NDArray[np.floating], version: int,
                     rev: int, affinity: dict[str, float]) -> None:
        """Store a vector the API recomputed (never over a newer one); failures only log."""
        try:
            self._call(self.store.write_vectors, [(user_id, vector, version, rev, affinity)])
        except StateUnavailable:
            pass

    def catalog_movie(self, movie_id: str) -> dict[str, Any] | None:
        """A movie known only from a catalog event (not yet in a model)."""
        raw: dict[bytes, bytes] = self._call(self.client.hgetall,
                                             self.keys.catalog_movie(movie_id))
        if not raw:
            return None
        fields = {k.decode(): v for k, v in raw.items() if k != b"vector"}
        year = fields.get("year", b"").decode()
        names, ids = split_people(json.loads(fields.get("people", b"{}")))
        return {
            "movie_id": movie_id,
            "title": fields.get("title", b"").decode(),
            "year": int(year) if year else None,
            "genres": [g for g in fields.get("genres", b"").decode().split("|") if g],
            "people": names,
            "person_ids": ids,
            "popularity": 0.0,
        }

    def lag(self) -> dict[str, Any]:
        """What the stream workers last reported: lag per topic-partition."""
        raw: dict[bytes, bytes] = self._call(self.client.hgetall, self.keys.lag())
        # a worker's own group topics (Faust's ``...-__assignor-__leader``) are not input
        partitions = {k.decode(): int(v) for k, v in raw.items()
                      if not k.startswith(b"_") and b"__" not in k}
        updated = raw.get(b"_updated_at")
        return {
            "total": sum(partitions.values()),
            "partitions": dict(sorted(partitions.items())),
            "reported_at": float(updated) if updated else None,
        }

    def ping(self) -> bool:
        try:
            return bool(self._call(self.client.ping))
        except StateUnavailable:
            return False
