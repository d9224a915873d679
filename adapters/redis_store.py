"""Users' live state in Redis: the one place that knows the key layout and the Lua merge.

Per user (keys from :class:`recsys_core.keys.Keys`, hash-tagged by user so a user's keys
share a Redis Cluster slot):
- ``history`` hash: movie_id → packed :class:`PairState`;
- ``recent`` sorted set: movie_id → last interaction time, capped at ``cap`` movies;
- ``meta`` hash: ``rev`` (events applied), ``vector`` (float32 LE), ``vector_version``,
  ``vector_rev``, ``affinity`` (JSON of the strongest genres and people).

:meth:`UserStateStore.apply` runs one Lua script per event that, atomically, drops a
duplicate ``event_id``, merges the pair, trims to the cap, bumps ``rev`` and appends the
event to the event-log stream, so the log holds each applied event exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from recsys_core.keys import Keys
from recsys_core.userstate import PairState, decode_vector, encode_vector

APPLY_LUA = """
-- KEYS: seen, history, recent, meta, eventlog
-- ARGV: event_id, movie_id, ts, rating|'', completion|'', cap, ttl, payload, log_maxlen
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[7])) == false then
  return {0, tonumber(redis.call('HGET', KEYS[4], 'rev') or '0')}
end
local ts = tonumber(ARGV[3])
local rat_at, rat, comp, last = nil, nil, nil, ts
local cur = redis.call('HGET', KEYS[2], ARGV[2])
if cur then
  local f = {}
  for part in string.gmatch(cur .. '|', '([^|]*)|') do f[#f + 1] = part end
  if f[1] ~= '' then rat_at = tonumber(f[1]) end
  if f[2] ~= '' then rat = tonumber(f[2]) end
  if f[3] ~= '' then comp = tonumber(f[3]) end
  if f[4] ~= '' and tonumber(f[4]) > last then last = tonumber(f[4]) end
end
if ARGV[4] ~= '' then
  local r = tonumber(ARGV[4])
  if rat == nil or ts > rat_at or (ts == rat_at and r > rat) then rat_at, rat = ts, r end
end
if ARGV[5] ~= '' then
  local c = tonumber(ARGV[5])
  if comp == nil or c > comp then comp = c end
end
local function s(x) if x == nil then return '' end return string.format('%.17g', x) end
redis.call('HSET', KEYS[2], ARGV[2], s(rat_at) .. '|' .. s(rat) .. '|' .. s(comp) .. '|' .. s(last))
redis.call('ZADD', KEYS[3], last, ARGV[2])
local cap = tonumber(ARGV[6])
local n = redis.call('ZCARD', KEYS[3])
if n > cap then
  local old = redis.call('ZRANGE', KEYS[3], 0, n - cap - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, n - cap - 1)
  redis.call('HDEL', KEYS[2], unpack(old))
end
local rev = redis.call('HINCRBY', KEYS[4], 'rev', 1)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', tonumber(ARGV[9]), '*', 'e', ARGV[8])
return {1, rev}
"""


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


@dataclass
class UserSnapshot:
    pairs: dict[str, PairState]
    rev: int
    vector: npt.NDArray[np.float32] | None
    vector_version: int | None
    vector_rev: int | None
    affinity: dict[str, float]


class UserStateStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        cap: int = 500,
        dedupe_ttl_seconds: int = 7 * 24 * 3600,
        event_log_maxlen: int = 5_000_000,
    ) -> None:
        self.r = client
        self.keys = keys or Keys()
        self.cap = cap
        self.ttl = dedupe_ttl_seconds
        self.log_maxlen = event_log_maxlen
        self._apply = self.r.register_script(APPLY_LUA)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> UserStateStore:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2),
                   **kwargs)

    def apply(self, batch: Sequence[Interaction]) -> list[tuple[bool, int]]:
        """Apply events in order in one round trip; per event (applied, user's rev)."""
        if not batch:
            return []
        pipe = self.r.pipeline(transaction=False)
        k = self.keys
        for it in batch:
            self._apply(
                keys=[k.event_seen(it.event_id), k.history(it.user_id), k.recent(it.user_id),
                      k.meta(it.user_id), k.event_log()],
                args=[it.event_id, it.movie_id, repr(float(it.timestamp)),
                      "" if it.rating is None else repr(float(it.rating)),
                      "" if it.completion is None else repr(float(it.completion)),
                      self.cap, self.ttl, it.payload, self.log_maxlen],
                client=pipe,
            )
        return [(bool(applied), int(rev)) for applied, rev in pipe.execute()]

    def read(self, user_ids: Sequence[str], factors: int) -> list[UserSnapshot]:
        """Every user's pairs and meta in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for uid in user_ids:
            pipe.hgetall(self.keys.history(uid))
            pipe.hgetall(self.keys.meta(uid))
        raw = pipe.execute()
        out = []
        for j in range(len(user_ids)):
            hist: dict[bytes, bytes] = raw[2 * j]
            meta: dict[bytes, bytes] = raw[2 * j + 1]
            pairs = {m.decode(): PairState.unpack(v) for m, v in hist.items()}
            vec = meta.get(b"vector")
            out.append(UserSnapshot(
                pairs=pairs,
                rev=int(meta.get(b"rev", b"0")),
                vector=decode_vector(vec, factors) if vec is not None else None,
                vector_version=_int(meta.get(b"vector_version")),
                vector_rev=_int(meta.get(b"vector_rev")),
                affinity=json.loads(meta[b"affinity"]) if b"affinity" in meta else {},
            ))
        return out

    def write_vectors(
        self,
        updates: Sequence[tuple[str, npt.NDArray[np.floating], int, int, dict[str, float]]],
    ) -> None:
        """``(user_id, vector, model_version, rev, affinity)`` per user, one round trip; each
        updated user is announced on the user-updated channel."""
        if not updates:
            return
        pipe = self.r.pipeline(transaction=False)
        for uid, vec, version, rev, affinity in updates:
            pipe.hset(self.keys.meta(uid), mapping={
                "vector": encode_vector(vec), "vector_version": version, "vector_rev": rev,
                "affinity": json.dumps(affinity),
            })
        pipe.publish(self.keys.user_updates(), json.dumps([u[0] for u in updates]))
        pipe.execute()

    def upsert_movie(self, movie_id: str, fields: dict[str, str], vector: bytes) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.keys.catalog_movie(movie_id), mapping={**fields, "vector": vector})
        pipe.sadd(self.keys.catalog_index(), movie_id)
        pipe.execute()


def _int(raw: bytes | None) -> int | None:
    return None if raw is None else int(raw)
