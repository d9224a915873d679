"""Follows and social inboxes in Redis.

- A user's follows: a hash followee → ``f:<time>`` or ``u:<time>`` (:meth:`Keys.follows`).
  A follow event changes it only when it is newer than what the hash holds for that pair
  (the newest ``occurred_at`` wins; at the same time an unfollow wins), so applying an event
  twice, or an older one late, changes nothing: exactly-once effects without a dedupe log.
- Followers: the reverse set (:meth:`Keys.followers`), set from the hash's final state of
  every pair a batch touched (so a crash between the two writes is mended by redelivery).
- A social inbox per user (:meth:`Keys.social_inbox`): what the people they follow rated or
  watched, written by the stream when the followee's event is applied (fan-out on write,
  to at most ``fanout_cap`` followers) and, on a new follow, filled with the followee's
  newest movies. Entries are members ``followee|movie|rating|completion`` scored by time:
  writing one twice is a no-op. Readers keep only entries of people still followed, so an
  unfollow takes effect at once; the inbox keeps its newest ``inbox_cap`` entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from recsys_core.keys import Keys
from recsys_core.userstate import PairState

FOLLOW_LUA = """
-- KEYS[1]: the follower's follows hash; ARGV: triples (followee, time, 'f' or 'u')
-- returns per event: 1 if it changed the pair, else 0; then per event the pair's state
local changed, state = {}, {}
for i = 1, #ARGV, 3 do
  local who, ts, act = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local cur = redis.call('HGET', KEYS[1], who)
  local apply = true
  if cur then
    local cact, cts = string.sub(cur, 1, 1), tonumber(string.sub(cur, 3))
    if ts < cts or (ts == cts and (cact == act or act == 'f')) then apply = false end
  end
  if apply then
    redis.call('HSET', KEYS[1], who, act .. ':' .. ARGV[i + 1])
    changed[#changed + 1] = 1
  else
    changed[#changed + 1] = 0
  end
end
for i = 1, #ARGV, 3 do
  state[#state + 1] = string.sub(redis.call('HGET', KEYS[1], ARGV[i]), 1, 1)
end
for _, s in ipairs(state) do changed[#changed + 1] = s end
return changed
"""


@dataclass(frozen=True)
class FollowChange:
    follower: str
    followee: str
    timestamp: float
    follow: bool  # False: unfollow


@dataclass(frozen=True)
class Activity:
    """A rating or watch that goes to the actor's followers' inboxes."""

    user_id: str
    movie_id: str
    timestamp: float
    rating: float | None
    completion: float | None

    def member(self) -> str:
        r = "" if self.rating is None else repr(float(self.rating))
        c = "" if self.completion is None else repr(float(self.completion))
        return f"{self.user_id}|{self.movie_id}|{r}|{c}"


@dataclass(frozen=True)
class InboxEntry:
    followee: str
    movie_id: str
    rating: float | None
    completion: float | None
    timestamp: float


def parse_member(member: bytes | str, score: float) -> InboxEntry | None:
    text = member.decode() if isinstance(member, bytes) else member
    parts = text.split("|")
    if len(parts) != 4:
        return None
    r, c = parts[2], parts[3]
    return InboxEntry(parts[0], parts[1], float(r) if r else None, float(c) if c else None,
                      float(score))


def followed(raw: dict[bytes, bytes]) -> dict[str, float]:
    """Followee → when followed, from a follows hash as read (unfollowed pairs left out)."""
    out = {}
    for who, value in raw.items():
        text = value.decode()
        if text.startswith("f:"):
            out[who.decode()] = float(text[2:])
    return out


class FollowStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None, inbox_cap: int = 500,
                 fanout_cap: int = 10_000, backfill: int = 20) -> None:
        self.r = client
        self.keys = keys or Keys()
        self.inbox_cap = inbox_cap
        self.fanout_cap = fanout_cap
        self.backfill = backfill
        self._follow = self.r.register_script(FOLLOW_LUA)

    def apply(self, changes: Sequence[FollowChange]) -> list[bool]:
        """Apply follow changes (in order per follower); per change, whether it changed the
        pair (False: already applied, or older than the pair's newest)."""
        if not changes:
            return []
        by_user: dict[str, list[int]] = {}
        for n, ch in enumerate(changes):
            by_user.setdefault(ch.follower, []).append(n)
        pipe = self.r.pipeline(transaction=False)
        for uid, positions in by_user.items():
            args: list[Any] = []
            for n in positions:
                ch = changes[n]
                args += [ch.followee, repr(float(ch.timestamp)), "f" if ch.follow else "u"]
            self._follow(keys=[self.keys.follows(uid)], args=args, client=pipe)
        out = [False] * len(changes)
        final: dict[tuple[str, str], bool] = {}
        for (uid, positions), reply in zip(by_user.items(), pipe.execute(), strict=True):
            half = len(positions)
            for j, n in enumerate(positions):
                out[n] = int(reply[j]) == 1
                state = reply[half + j]
                final[(uid, changes[n].followee)] = (
                    state.decode() if isinstance(state, bytes) else str(state)) == "f"
        pipe = self.r.pipeline(transaction=False)
        for (follower, followee), on in final.items():
            key = self.keys.followers(followee)
            pipe.sadd(key, follower) if on else pipe.srem(key, follower)
        pipe.execute()
        new = [(changes[n].follower, changes[n].followee) for n in range(len(changes))
               if out[n] and final[(changes[n].follower, changes[n].followee)]]
        if new and self.backfill:
            self._backfill(new)
        return out

    def _backfill(self, pairs: list[tuple[str, str]]) -> None:
        """Put each new followee's newest movies into the follower's inbox."""
        pipe = self.r.pipeline(transaction=False)
        for _, followee in pairs:
            pipe.zrevrange(self.keys.recent(followee), 0, self.backfill - 1)
            pipe.hgetall(self.keys.history(followee))
        raw = pipe.execute()
        pipe = self.r.pipeline(transaction=False)
        for j, (follower, followee) in enumerate(pairs):
            newest, hist = raw[2 * j], raw[2 * j + 1]
            entries = {}
            for movie in newest:
                packed = hist.get(movie)
                if packed is None:
                    continue
                pair = PairState.unpack(packed)
                act = Activity(followee, movie.decode(), pair.last_at, pair.rating,
                               pair.completion)
                entries[act.member()] = pair.last_at
            if entries:
                key = self.keys.social_inbox(follower)
                pipe.zadd(key, entries)
                pipe.zremrangebyrank(key, 0, -self.inbox_cap - 1)
        pipe.execute()

    def fan_out(self, activities: Sequence[Activity]) -> int:
        """Write each activity into its actor's followers' inboxes (idempotent); how many
        inbox entries were written."""
        actors = sorted({a.user_id for a in activities})
        if not actors:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for uid in actors:
            pipe.smembers(self.keys.followers(uid))
        followers = {uid: sorted(m.decode() for m in fans)[: self.fanout_cap]
                     for uid, fans in zip(actors, pipe.execute(), strict=True) if fans}
        if not followers:
            return 0
        per_inbox: dict[str, dict[str, float]] = {}
        for a in activities:
            for fan in followers.get(a.user_id, ()):
                per_inbox.setdefault(fan, {})[a.member()] = a.timestamp
        pipe = self.r.pipeline(transaction=False)
        for fan, entries in per_inbox.items():
            key = self.keys.social_inbox(fan)
            pipe.zadd(key, entries)
            pipe.zremrangebyrank(key, 0, -self.inbox_cap - 1)
        pipe.execute()
        return sum(len(e) for e in per_inbox.values())

    def read_commands(self, pipe: Any, user_id: str) -> None:
        """Queue the reads of one user's follows and inbox (two replies, for
        :func:`inbox_of`)."""
        pipe.hgetall(self.keys.follows(user_id))
        pipe.zrevrange(self.keys.social_inbox(user_id), 0, self.inbox_cap - 1,
                       withscores=True)

    def read(self, user_id: str) -> tuple[dict[str, float], list[InboxEntry]]:
        pipe = self.r.pipeline(transaction=True)
        self.read_commands(pipe, user_id)
        follows_raw, inbox_raw = pipe.execute()
        return inbox_of(follows_raw, inbox_raw)

    def followers_of(self, user_id: str) -> set[str]:
        return {m.decode() for m in self.r.smembers(self.keys.followers(user_id))}


def inbox_of(follows_raw: dict[bytes, bytes], inbox_raw: list[tuple[bytes, float]]
             ) -> tuple[dict[str, float], list[InboxEntry]]:
    """(followee → when followed, the inbox entries of people still followed, newest
    first)."""
    follows = followed(follows_raw)
    entries = []
    for member, score in inbox_raw:
        entry = parse_member(member, score)
        if entry is not None and entry.followee in follows:
            entries.append(entry)
    return follows, entries
