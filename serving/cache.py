"""Recommendation responses kept per API process. A key holds the question as validated
parameters (:func:`params_key`: unknown query parameters are ignored, as the route ignores
them, and never change the key; parameter order, repeated list values and defaults spelled
out or left out give the same key), the model version, the user's state revision (``rev``,
bumped by every applied event) and the epoch of the Redis data set it was read from (a new
one after a flush or an empty restart, when revisions start again at 1), so an entry can
never be stale: a new event or a new model version simply makes a new key, and old entries
age out of the LRU. Apps that re-ask for the same user's list get it without rescoring.
With a reranker the key also holds the hour of the event clock: the movie activity it reads
moves with everyone's events, so a reranked answer is kept for that hour only.

A user with no stored state at all (no revision, history or vector) gets the cold-start
answer, which depends on nothing of the user: it is kept once per segment (the question,
the model version, the catalogue, the hour when reranked) and shared by every such user,
with the user id put in on the way out (:meth:`ResponseCache.answer`). The user's first
event bumps the revision, so the next answer is the user's own."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Container, Hashable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from adapters.redis_store import UserSnapshot
from serving import metrics

#: the validated, normalised question of a recommendations request
Params = tuple[Any, ...]
#: what the route's parameters accept (serving/app.py); anything else is left to the route
PARAMS = frozenset({"k", "genre", "year_min", "year_max", "exclude_seen", "exclude",
                    "surface"})
MAX_GENRES, MAX_EXCLUDE = 32, 1000
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def params_key(k: int, genres: Iterable[str], year_min: int | None, year_max: int | None,
               exclude_seen: bool, exclude: Iterable[str], surface: str) -> Params:
    """The question as the answer depends on it: genres are any-of and case-insensitive,
    exclusions a set, ``surface`` the resolved name (the model's default when left out)."""
    return (k, tuple(sorted({g.lower() for g in genres})), year_min, year_max,
            bool(exclude_seen), tuple(sorted(set(exclude))), surface)


def _int(values: list[str], low: int, high: int) -> int | None:
    if len(values) != 1 or not values[0].isdigit() or len(values[0]) > 4:
        raise ValueError
    n = int(values[0])
    if not low <= n <= high:
        raise ValueError
    return n


def query_key(query: bytes, surfaces: Container[str], default_surface: str) -> Params | None:
    """:func:`params_key` of a raw query string, for the look-up before routing; None
    whenever it is not plainly valid (a repeated single value, a bound crossed, anything
    the route would refuse or parse otherwise): the route then validates it and looks up
    the same key itself."""
    given: dict[str, list[str]] = {}
    try:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name in PARAMS:
                given.setdefault(name, []).append(value)
        k = _int(given["k"], 1, 100) if "k" in given else 10
        year_min = _int(given["year_min"], 1870, 2100) if "year_min" in given else None
        year_max = _int(given["year_max"], 1870, 2100) if "year_max" in given else None
    except ValueError:
        return None
    seen = given.get("exclude_seen", ["true"])
    if len(seen) != 1 or seen[0].lower() not in _TRUE | _FALSE:
        return None
    surface = given.get("surface", [default_surface])
    genres, exclude = given.get("genre", []), given.get("exclude", [])
    if (len(surface) != 1 or surface[0] not in surfaces or len(genres) > MAX_GENRES
            or len(exclude) > MAX_EXCLUDE or "" in genres):
        return None
    return params_key(k or 10, genres, year_min, year_max, seen[0].lower() in _TRUE, exclude,
                      surface[0])


def no_state(snap: UserSnapshot) -> bool:
    """Nothing stored for the user: the cold-start answer, the same for every such user."""
    return (snap.rev == 0 and not snap.raw_history and snap.vector is None
            and not snap.dropped and not snap.affinity)


def _prefix(user_id: str) -> bytes:
    return b'{"user_id":' + json.dumps(user_id, ensure_ascii=False).encode() + b","


def segment_body(body: bytes, user_id: str) -> bytes | None:
    """A cold-start answer without its user id, to keep for the segment (None: not the
    expected shape, keep nothing)."""
    prefix = _prefix(user_id)
    return body[len(prefix):] if body.startswith(prefix) else None


def for_user(rest: bytes, user_id: str) -> bytes:
    """A segment's kept answer for one user."""
    return _prefix(user_id) + rest


class ResponseCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable, count_miss: bool = True) -> bytes | None:
        """The kept body, or None (counted as a miss unless ``count_miss`` is false: the
        caller will look again)."""
        if not self.size:
            return None
        body = self._items.get(key)
        if body is None:
            if count_miss:
                metrics.CACHE.labels("miss").inc()
            return None
        self._items.move_to_end(key)
        metrics.CACHE.labels("hit").inc()
        return body

    def put(self, key: Hashable, body: bytes) -> None:
        if not self.size:
            return
        self._items[key] = body
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def answer(self, key: Hashable, user_id: str, rev: int, count_miss: bool = True
               ) -> bytes | None:
        """The kept body for ``user_id`` (revision 0: the segment's, with the id put in)."""
        body = self.get(key, count_miss)
        return for_user(body, user_id) if body is not None and not rev else body

    def keep(self, key: Hashable, user_id: str, rev: int, body: bytes,
             fallback_reason: str | None) -> None:
        """Keep an answer computed from the state at ``rev``: the user's own, or (revision 0)
        the cold-start answer for the segment; never one given without the state."""
        if fallback_reason not in (None, "cold_start"):
            return
        if rev:
            self.put(key, body)
        elif fallback_reason == "cold_start":
            rest = segment_body(body, user_id)
            if rest is not None:
                self.put(key, rest)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
