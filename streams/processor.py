"""The stream's work on one batch, apart from Faust so it can be tested and benchmarked
against a real Redis directly: validate → dedupe and merge in Redis (atomic per event) →
recompute each touched user's fold-in vector and affinities once per batch."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from adapters.follow_store import FollowStore
from adapters.redis_store import APPLIED, DUPLICATE, REDELIVERED, Interaction, UserStateStore
from recsys_core.artifacts import ModelBundle
from recsys_core.confidence import ConfidenceRule
from recsys_core.content import content_vector
from recsys_core.errors import InvalidEvent
from recsys_core.events import CatalogEvent, EventType, RatingEvent, WatchEvent, parse_event
from recsys_core.foldin import fold_in_user
from recsys_core.userstate import AffinityIndex, encode_vector, history_from_pairs
from streams.follows import apply_follows, fan_out

log = logging.getLogger(__name__)


#: the event outcome of each store outcome (``redelivered``: applied before, delivered again)
OUTCOMES = {APPLIED: "applied", DUPLICATE: "duplicate", REDELIVERED: "redelivered"}


class Record(NamedTuple):
    """One consumed message (a tuple: cheap to build and to send to the helper process)."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes  # JSON: reason, detail, source topic/partition/offset, raw bytes (base64)
    reason: str


@dataclass
class BatchResult:
    outcomes: dict[str, int] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    vectors_updated: int = 0
    seconds: float = 0.0

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n


class ModelView:
    """What the stream needs of one model version, built once when the version loads."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.version = bundle.version
        self.rule = ConfidenceRule.from_dict(bundle.manifest.get("confidence_rule", {}))
        self.regularization = float(bundle.params.get("als_regularization", 0.1))
        self.factors = int(bundle.item_factors.shape[1])
        self.affinity = AffinityIndex.from_bundle(bundle)


#: raw bytes kept in a dead letter (base64: 4/3 of it), so that a letter always fits well
#: under the producer's largest request (1 MB by default) whatever the bad value's size
DEAD_LETTER_RAW_BYTES = 64 * 1024
#: the longest message key and detail a dead letter repeats
DEAD_LETTER_KEY_BYTES = 1024
DEAD_LETTER_DETAIL_CHARS = 1000


def dead_letter(record: Record, error: InvalidEvent) -> DeadLetter:
    """The letter for a bad record: its reason, where it was, and its raw bytes, cut to
    DEAD_LETTER_RAW_BYTES (``raw_truncated``) with the original size (``raw_bytes``) and a
    SHA-256 of the whole value (``raw_sha256``), so a letter is at most about 90 KB."""
    raw = record.value or b""
    kept = raw[:DEAD_LETTER_RAW_BYTES]
    body = {
        "reason": error.reason,
        "detail": error.detail[:DEAD_LETTER_DETAIL_CHARS],
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "raw_base64": base64.b64encode(kept).decode(),
        "raw_bytes": len(raw),
        "raw_truncated": len(kept) < len(raw),
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
        "failed_at": datetime.now(UTC).isoformat(),
    }
    key = record.key[:DEAD_LETTER_KEY_BYTES] if record.key is not None else None
    return DeadLetter(key, json.dumps(body).encode(), error.reason)


class StreamProcessor:
    def __init__(
        self,
        store: UserStateStore,
        model: Callable[[], ModelView | None],
        rule: ConfidenceRule | None = None,
    ) -> None:
        self.store = store
        self.follows = FollowStore(store.r, store.keys)
        self.model = model
        self.default_rule = rule or ConfidenceRule()

    def process(self, kind: EventType, records: Sequence[Record]) -> BatchResult:
        start = time.perf_counter()
        result = BatchResult()
        if kind == "follow":
            return self._follow_batch(records, result, start)
        model = self.model()
        interactions: list[Interaction] = []
        for rec in records:
            try:
                event = parse_event(kind, rec.value)
            except InvalidEvent as exc:
                log.warning("dead letter: %s (%s) at %s[%d]@%d", exc.reason, exc.detail,
                            rec.topic, rec.partition, rec.offset)
                result.dead_letters.append(dead_letter(rec, exc))
                result.count("invalid")
                continue
            if isinstance(event, CatalogEvent):
                self._catalog(event, model)
                result.count("applied")
                continue
            interactions.append(_interaction(event, kind, rec.value or b"",
                                             (rec.topic, rec.partition, rec.offset)))
        applied = self.store.apply(interactions)
        fan_out(self.follows, interactions)
        touched: dict[str, int] = {}
        for it, (flag, rev) in zip(interactions, applied, strict=True):
            ok = flag == APPLIED
            result.count(OUTCOMES[flag])
            if ok and model is not None and it.movie_id not in model.bundle.movies:
                result.count("unknown_movie")  # kept in the history, enters the next model
            touched[it.user_id] = rev
        if touched:
            self.store.touch_active(list(touched), time.time())
            self._count_served_hits(interactions, applied, result)
        if model is not None and touched:
            result.vectors_updated = self._refresh_vectors(list(touched), model)
        result.seconds = time.perf_counter() - start
        return result

    def _follow_batch(self, records: Sequence[Record], result: BatchResult,
                      start: float) -> BatchResult:
        outcomes, invalid = apply_follows(self.follows, [rec.value for rec in records])
        for n, exc in invalid:
            rec = records[n]
            log.warning("dead letter: %s (%s) at %s[%d]@%d", exc.reason, exc.detail,
                        rec.topic, rec.partition, rec.offset)
            result.dead_letters.append(dead_letter(rec, exc))
        for outcome in outcomes:
            result.count(outcome)
        result.seconds = time.perf_counter() - start
        return result

    def _count_served_hits(self, interactions: Sequence[Interaction],
                           applied: Sequence[tuple[int, int]], result: BatchResult) -> None:
        """Live HR@10: of the applied events of users the API served a top-10 to in the
        last hour, how many were for a movie in that list (``served_hit`` of
        ``served_event``)."""
        users = sorted({it.user_id for it, (flag, _) in zip(interactions, applied, strict=True)
                        if flag == APPLIED})
        lists = dict(zip(users, self.store.served(users), strict=True))
        for it, (flag, _) in zip(interactions, applied, strict=True):
            if flag == APPLIED and lists.get(it.user_id):
                result.count("served_event")
                if it.movie_id in lists[it.user_id]:
                    result.count("served_hit")

    def refresh_vectors(self, user_ids: Sequence[str]) -> int:
        """Recompute these users' stale vectors with the current model (0 without one), e.g.
        after their state was seeded outside the stream; how many were written."""
        model = self.model()
        if model is None or not user_ids:
            return 0
        return self._refresh_vectors(list(user_ids), model)

    def refold_active(self, model: ModelView, window_seconds: float, chunk: int = 500,
                      stop: Callable[[], bool] = lambda: False) -> tuple[int, int]:
        """After a new model version: recompute the vectors of every user active in the
        last ``window_seconds`` (most recent first) whose stored vector is from another
        version, so their next request finds a current vector. Users who were inactive
        longer are refolded lazily (by the API on their next request, or by their next
        event). Returns (users looked at, vectors written)."""
        since = time.time() - window_seconds
        self.store.forget_inactive(since)
        seen = written = 0
        while not stop():
            users = self.store.active_users(since, seen, chunk)
            if not users:
                break
            seen += len(users)
            written += self._refresh_vectors(users, model)
        return seen, written

    def _refresh_vectors(self, user_ids: list[str], model: ModelView) -> int:
        """Recompute the vector of every user whose stored one is stale (older state rev or
        another model version); a duplicate that finds it current costs one read."""
        snapshots = self.store.read(user_ids, model.factors)
        updates = []
        for uid, snap in zip(user_ids, snapshots, strict=True):
            if snap.vector_rev == snap.rev and snap.vector_version == model.version:
                continue
            history, _ = history_from_pairs(snap.table, model.bundle, model.rule)
            vec = fold_in_user(model.bundle.item_factors, model.bundle.yty, history.item_idx,
                               history.confidence, model.regularization)
            updates.append((uid, vec, model.version, snap.rev, model.affinity.profile(history)))
        self.store.write_vectors(updates)
        return len(updates)

    def _catalog(self, event: CatalogEvent, model: ModelView | None) -> None:
        vec = (content_vector(model.bundle, event.tokens()) if model is not None
               else np.zeros(0, np.float32))
        fields = {
            "title": event.title,
            "year": "" if event.year is None else str(event.year),
            "genres": "|".join(event.genres),
            "people": json.dumps(event.people),
            "tags": json.dumps(event.tags),
            "occurred_at": event.occurred_at.isoformat(),
            "vector_version": "" if model is None else str(model.version),
        }
        self.store.upsert_movie(event.movie_id, fields, encode_vector(vec))


def _interaction(event: RatingEvent | WatchEvent, kind: EventType, raw: bytes,
                 source: tuple[str, int, int] | None = None) -> Interaction:
    """The event as the store applies it; the event log keeps the producer's bytes as sent
    (already validated), tagged with the type."""
    if isinstance(event, RatingEvent):
        rating, completion = event.rating, None
    else:
        rating, completion = None, event.watch_completion
    return Interaction(event.event_id, event.user_id, event.movie_id, event.timestamp,
                       rating, completion, kind.encode() + b" " + raw, source)
