"""Users' live state in Redis: the one place that knows the key layout and the Lua merge.

Per user (keys from :class:`recsys_core.keys.Keys`, hash-tagged by user so a user's keys
share a Redis Cluster slot):
- ``history`` hash: movie_id → packed :class:`PairState`;
- ``recent`` sorted set: movie_id → last interaction time, capped at ``cap`` movies;
- ``dropped`` set: the movie ids the cap dropped, so that the history and this set together
  hold every movie the user ever rated or watched (``exclude_seen`` never forgets);
- ``meta`` hash: ``rev`` (events applied), ``vector`` (float32 LE), ``vector_version``,
  ``vector_rev``, ``affinity`` (JSON of the strongest genres and people), and per source
  partition ``o:<topic>:<partition>``: the offset of the user's last event applied from it;
- ``ids`` sorted set: the user's last :data:`DEDUPE_WINDOW` event ids.

:meth:`UserStateStore.apply` runs one Lua script per user and batch that, atomically and
in order, skips each event delivered again (its offset at or below the user's mark for its
partition) and each duplicate ``event_id``, merges the pair, appends the event to the
event-log stream (so the log holds each applied event exactly once), then trims to the cap
and bumps ``rev``. With ``log=False`` (seeding users from a dataset the trainer already
reads) the event log is left alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from recsys_core.keys import Keys
from recsys_core.userstate import PairState, PairTable, decode_vector, encode_vector

APPLY_LUA = """
-- One user's events of a batch, in order.
-- KEYS: history, recent, meta, eventlog, dropped, ids (the user's recent event ids)
-- ARGV: cap, window, log_maxlen, log (1: append to the event log, 0: do not),
--       then per event: event_id, movie_id, ts, rating|'', completion|'', payload,
--       source (meta field of the source partition's mark, '' for none), offset
-- Per event: 2 when its offset is at or below the user's mark for its source partition
-- (delivered again: applied before), 0 when its id is among the user's last `window` ids
-- (a producer's duplicate), else 1 (applied). Then the user's rev.
local cap, window, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local log = ARGV[4] == '1'
local function s(x) if x == nil then return '' end return string.format('%.17g', x) end
local out = {}
local applied = 0
local rev0 = tonumber(redis.call('HGET', KEYS[3], 'rev') or '0')
local marks, moved = {}, {}
for e = 1, (#ARGV - 4) / 8 do
  local a = 4 + (e - 1) * 8
  local source, offset = ARGV[a + 7], tonumber(ARGV[a + 8])
  local mark = nil
  if source ~= '' then
    mark = marks[source]
    if mark == nil then
      mark = tonumber(redis.call('HGET', KEYS[3], source) or '-1')
      marks[source] = mark
    end
  end
  if mark ~= nil and offset <= mark then
    out[e] = 2
  elseif redis.call('ZADD', KEYS[6], 'NX', rev0 + applied + 1, ARGV[a + 1]) == 0 then
    out[e] = 0
  else
    out[e] = 1
    applied = applied + 1
    local movie, ts = ARGV[a + 2], tonumber(ARGV[a + 3])
    local rat_at, rat, comp, last = nil, nil, nil, ts
    local cur = redis.call('HGET', KEYS[1], movie)
    if cur then
      local f = {}
      for part in string.gmatch(cur .. '|', '([^|]*)|') do f[#f + 1] = part end
      if f[1] ~= '' then rat_at = tonumber(f[1]) end
      if f[2] ~= '' then rat = tonumber(f[2]) end
      if f[3] ~= '' then comp = tonumber(f[3]) end
      if f[4] ~= '' and tonumber(f[4]) > last then last = tonumber(f[4]) end
    end
    if ARGV[a + 4] ~= '' then
      local r = tonumber(ARGV[a + 4])
      if rat == nil or ts > rat_at or (ts == rat_at and r > rat) then rat_at, rat = ts, r end
    end
    if ARGV[a + 5] ~= '' then
      local c = tonumber(ARGV[a + 5])
      if comp == nil or c > comp then comp = c end
    end
    local packed = s(rat_at) .. '|' .. s(rat) .. '|' .. s(comp) .. '|' .. s(last)
    redis.call('HSET', KEYS[1], movie, packed)
    redis.call('ZADD', KEYS[2], last, movie)
    if log then
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', ARGV[a + 6])
    end
  end
  if mark ~= nil and offset > mark then
    marks[source] = offset
    moved[source] = offset
  end
end
for source, offset in pairs(moved) do
  redis.call('HSET', KEYS[3], source, offset)
end
local n_ids = redis.call('ZCARD', KEYS[6])
if n_ids > window then
  redis.call('ZREMRANGEBYRANK', KEYS[6], 0, n_ids - window - 1)
end
local n = redis.call('ZCARD', KEYS[2])
if n > cap then
  local old = redis.call('ZRANGE', KEYS[2], 0, n - cap - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - cap - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('SADD', KEYS[5], unpack(old))  -- seen for ever: exclude_seen reads it
end
local rev
if applied > 0 then
  rev = redis.call('HINCRBY', KEYS[3], 'rev', applied)
else
  rev = rev0
end
out[#out + 1] = rev
return out
"""


WRITE_VECTOR_LUA = """
-- KEYS: meta. ARGV: vector, version, rev, affinity.
-- Newer state wins: a vector computed from an older snapshot never replaces one computed
-- from a newer (higher rev; same rev: higher model version).
local cur_rev = tonumber(redis.call('HGET', KEYS[1], 'vector_rev') or '-1')
local cur_ver = tonumber(redis.call('HGET', KEYS[1], 'vector_version') or '-1')
local rev, ver = tonumber(ARGV[3]), tonumber(ARGV[2])
if rev > cur_rev or (rev == cur_rev and ver > cur_ver) then
  redis.call('HSET', KEYS[1], 'vector', ARGV[1], 'vector_version', ver, 'vector_rev', rev,
             'affinity', ARGV[4])
  return 1
end
return 0
"""


#: outcomes of :meth:`UserStateStore.apply`, per event
DUPLICATE, APPLIED, REDELIVERED = 0, 1, 2
#: event ids remembered per user (the newest ones): a producer's resent duplicate is caught
#: while it is among the user's last this many events (docs/deployment.md, "Memory")
DEDUPE_WINDOW = 64


def offset_field(topic: str, partition: int) -> str:
    """The user's ``meta`` field holding the offset of the user's last applied event from
    this partition (events at or below it are redeliveries)."""
    return f"o:{topic}:{partition}"


@dataclass(frozen=True)
class Interaction:
    """One valid rating or watch, as the store applies it."""

    event_id: str
    user_id: str
    movie_id: str
    timestamp: float
    rating: float | None
    completion: float | None
    payload: bytes  # the event as JSON, for the event log
    #: where it was read from: (topic, partition, offset); None outside the stream (seeding)
    source: tuple[str, int, int] | None = None


@dataclass
class UserSnapshot:
    raw_history: dict[bytes, bytes]  # the history hash as read; parsed on first use
    rev: int
    vector: npt.NDArray[np.float32] | None
    vector_version: int | None
    vector_rev: int | None
    affinity: dict[str, float]
    #: movie ids the history cap dropped (read only when asked for: ``seen=True``)
    dropped: frozenset[str] = frozenset()

    @cached_property
    def table(self) -> PairTable:
        return PairTable.from_packed(self.raw_history)

    @cached_property
    def pairs(self) -> dict[str, PairState]:
        return self.table.pairs()


class UserStateStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        cap: int = 500,
        dedupe_window: int = DEDUPE_WINDOW,
        event_log_maxlen: int = 5_000_000,
    ) -> None:
        self.r = client
        self.keys = keys or Keys()
        self.cap = cap
        self.window = dedupe_window
        self.log_maxlen = event_log_maxlen
        self._apply = self.r.register_script(APPLY_LUA)
        self._write_vector = self.r.register_script(WRITE_VECTOR_LUA)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> UserStateStore:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2),
                   **kwargs)

    def apply(
        self, batch: Sequence[Interaction], *, log: bool = True
    ) -> list[tuple[int, int]]:
        """Apply a batch in one round trip, one script call per user with that user's events
        in order; per event (outcome, the user's rev after the batch), the outcome
        :data:`APPLIED`, :data:`DUPLICATE` (its event id is among the user's last
        ``dedupe_window`` ids) or :data:`REDELIVERED` (its source offset is at or below the
        user's mark for that partition: applied before). ``log=False`` leaves the event log
        alone (seeding from a dataset the trainer reads anyway); the payloads are then not
        sent."""
        if not batch:
            return []
        by_user: dict[str, list[int]] = {}
        for n, it in enumerate(batch):
            by_user.setdefault(it.user_id, []).append(n)
        pipe = self.r.pipeline(transaction=False)
        k = self.keys
        for uid, positions in by_user.items():
            args: list[Any] = [self.cap, self.window, self.log_maxlen, "1" if log else "0"]
            keys = [k.history(uid), k.recent(uid), k.meta(uid), k.event_log(), k.dropped(uid),
                    k.recent_event_ids(uid)]
            for n in positions:
                it = batch[n]
                src = it.source
                args += [it.event_id, it.movie_id, repr(float(it.timestamp)),
                         "" if it.rating is None else repr(float(it.rating)),
                         "" if it.completion is None else repr(float(it.completion)),
                         it.payload if log else b"",
                         "" if src is None else offset_field(src[0], src[1]),
                         -1 if src is None else src[2]]
            self._apply(keys=keys, args=args, client=pipe)
        out: list[tuple[int, int]] = [(DUPLICATE, 0)] * len(batch)
        for positions, flags in zip(by_user.values(), pipe.execute(), strict=True):
            rev = int(flags[-1])
            for n, flag in zip(positions, flags[:-1], strict=True):
                out[n] = (int(flag), rev)
        return out

    def read(self, user_ids: Sequence[str], factors: int, *,
             seen: bool = False) -> list[UserSnapshot]:
        """Every user's pairs and meta in one round trip, each user's read atomic (MULTI), so
        ``rev`` always describes exactly the pairs read with it; with ``seen`` also the
        movies the cap dropped (:attr:`UserSnapshot.dropped`)."""
        pipe = self.r.pipeline(transaction=True)
        for uid in user_ids:
            self.read_commands(pipe, uid, seen=seen)
        raw = pipe.execute()
        n = 3 if seen else 2
        return [snapshot(*raw[n * j:n * j + n], factors=factors) for j in range(len(user_ids))]

    def read_commands(self, pipe: Any, user_id: str, *, seen: bool = True) -> None:
        """Queue :meth:`read`'s commands for one user on another (e.g. asyncio) pipeline;
        its two replies (three with ``seen``) make a :func:`snapshot`."""
        pipe.hgetall(self.keys.history(user_id))
        pipe.hgetall(self.keys.meta(user_id))
        if seen:
            pipe.smembers(self.keys.dropped(user_id))

    def write_vectors(
        self,
        updates: Sequence[tuple[str, npt.NDArray[np.floating], int, int, dict[str, float]]],
    ) -> None:
        """``(user_id, vector, model_version, rev, affinity)`` per user, one round trip; a
        vector is written only over an older one (two workers may race on a user whose ratings
        and watches sit on different partitions). Updated users are announced on the
        user-updated channel."""
        if not updates:
            return
        pipe = self.r.pipeline(transaction=False)
        for uid, vec, version, rev, affinity in updates:
            self._write_vector(keys=[self.keys.meta(uid)],
                               args=[encode_vector(vec), version, rev, json.dumps(affinity)],
                               client=pipe)
        pipe.publish(self.keys.user_updates(), json.dumps([u[0] for u in updates]))
        pipe.execute()

    def served(self, user_ids: Sequence[str]) -> list[set[str]]:
        """Each user's last served top-10 (empty when none within the hour), one round trip."""
        raw = self.r.mget([self.keys.served(u) for u in user_ids]) if user_ids else []
        return [set(v.decode().split(",")) if v else set() for v in raw]

    def touch_active(self, user_ids: Sequence[str], at: float) -> None:
        """Record these users as active at ``at`` (one command)."""
        if user_ids:
            self.r.zadd(self.keys.active_users(), dict.fromkeys(user_ids, at))

    def active_users(self, since: float, offset: int, count: int) -> list[str]:
        """Users active at or after ``since``, most recent first, one page."""
        raw = self.r.zrange(self.keys.active_users(), "+inf", since, desc=True, byscore=True,
                            offset=offset, num=count)
        return [u.decode() for u in raw]

    def forget_inactive(self, before: float) -> int:
        return int(self.r.zremrangebyscore(self.keys.active_users(), "-inf", f"({before}"))

    def upsert_movie(self, movie_id: str, fields: dict[str, str], vector: bytes) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.keys.catalog_movie(movie_id), mapping={**fields, "vector": vector})
        pipe.sadd(self.keys.catalog_index(), movie_id)
        pipe.execute()


def snapshot(hist: dict[bytes, bytes], meta: dict[bytes, bytes],
             dropped: set[bytes] | None = None, *, factors: int) -> UserSnapshot:
    """A user's state from the replies to HGETALL history, HGETALL meta and (optionally)
    SMEMBERS dropped."""
    vec = meta.get(b"vector")
    return UserSnapshot(
        raw_history=hist,
        rev=int(meta.get(b"rev", b"0")),
        vector=decode_vector(vec, factors) if vec is not None else None,
        vector_version=_int(meta.get(b"vector_version")),
        vector_rev=_int(meta.get(b"vector_rev")),
        affinity=json.loads(meta[b"affinity"]) if b"affinity" in meta else {},
        dropped=frozenset(m.decode() for m in dropped) if dropped else frozenset(),
    )


def _int(raw: bytes | None) -> int | None:
    return None if raw is None else int(raw)
