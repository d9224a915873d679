"""Which events are applied, per topic-partition: Redis is the source of truth.

Faust commits what its stream acked, and acks more than what is applied: it marks offset
gaps as done, accepts acks for partitions it no longer owns and, read offsets being reset
on a rebalance, skips one event after a seek. Here instead:

- a worker keeps, per partition it owns, the offset of the last event it applied *in
  order* (every event before it applied too), moved only by a batch that follows on from
  it, and written to Redis (``Keys.applied_offsets``, a value only ever raised) after the
  batch is applied and its dead letters are acked;
- the worker commits that offset + 1 and nothing else for the input topics
  (:func:`streams.faust_tuning.commit_applied_offsets`);
- a worker that is assigned a partition starts at the Redis mark + 1, whatever Kafka's
  committed offset says (:func:`streams.faust_tuning.seek_to_applied`);
- the consumer delivers each partition's events without holes from that position; a
  hole is never acked: the partition is sought back to the missing offset
  (:meth:`AppliedOffsets.on_hole`). A hole still there when the partition is read again is
  one the broker does not have (a broker that lost records in a crash, compaction): the
  consumer and the batch both go on across it, once, with a warning.

Per user, the Lua merge keeps the offset of the user's last applied event of each
partition, so an event delivered again (after a crash, or while two workers briefly share
a partition during a rebalance) is applied exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import redis

from recsys_core.keys import Keys
from streams.processor import Record

log = logging.getLogger(__name__)

TP = tuple[str, int]

RAISE_LUA = """
-- KEYS: the applied-offsets hash. ARGV: field, offset, field, offset, ...
-- Each field is only ever raised (two workers may briefly write the same partition).
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > cur then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""


def field_of(tp: TP) -> str:
    return f"{tp[0]}:{tp[1]}"


@dataclass
class _Hole:
    """A partition sought back to ``expected`` after a delivered offset skipped past it."""

    expected: int
    highest: int
    since: float = field(default_factory=time.monotonic)


@dataclass
class Split:
    """A batch's records sorted out against the applied marks."""

    todo: list[Record]  # not applied yet, in order, contiguous per partition
    redelivered: int  # at or below the mark: applied before
    out_of_order: dict[TP, int]  # partition → the offset it must be read from again
    last: dict[TP, int]  # partition → last offset in ``todo``


class AppliedOffsets:
    """The applied marks of one worker process, and the consumer's read positions."""

    def __init__(self, client: redis.Redis, keys: Keys, topics: Iterable[str]) -> None:
        self.r = client
        self.key = keys.applied_offsets()
        self.topics = frozenset(topics)
        #: last offset applied in order, per partition this process owns or owned
        self.applied: dict[TP, int] = {}
        #: next offset the consumer is to deliver, per partition (None: not known yet)
        self.next_read: dict[TP, int] = {}
        self.holes: dict[TP, _Hole] = {}
        #: partition → (first, next) offsets the broker does not have, read past on purpose
        self.absent: dict[TP, tuple[int, int]] = {}
        self._raise = client.register_script(RAISE_LUA)

    def guarded(self, topic: str) -> bool:
        return topic in self.topics

    # ------------------------------------------------------------ Redis

    def read_marks(self, tps: Sequence[TP]) -> dict[TP, int]:
        """The Redis marks of these partitions (those that have one)."""
        if not tps:
            return {}
        raw = self.r.hmget(self.key, [field_of(tp) for tp in tps])
        return {tp: int(v) for tp, v in zip(tps, raw, strict=True) if v is not None}

    def record(self, marks: Mapping[TP, int]) -> None:
        """Raise the Redis marks (after the events up to them are applied)."""
        if marks:
            args: list[str | int] = []
            for tp, offset in marks.items():
                args += [field_of(tp), offset]
            self._raise(keys=[self.key], args=args)

    # ------------------------------------------------------------ the consumer

    def start_positions(self, tps: Sequence[TP], committed: Mapping[TP, int | None]
                        ) -> dict[TP, int | None]:
        """Where each assigned partition is read from: the Redis mark + 1; without one
        (Redis unavailable or no mark yet) this process's own mark + 1, else Kafka's
        committed offset (never past an applied event: only applied marks are committed)."""
        try:
            marks = self.read_marks(tps)
        except (redis.RedisError, OSError) as exc:
            log.warning("applied offsets not read from Redis (%s); starting from the "
                        "committed offsets", exc)
            marks = {}
        out: dict[TP, int | None] = {}
        for tp in tps:
            if tp in marks:
                out[tp] = marks[tp] + 1
            elif tp in self.applied:
                out[tp] = self.applied[tp] + 1
            else:
                c = committed.get(tp)
                out[tp] = c if c is not None and c >= 0 else None
        return out

    def assigned(self, start: Mapping[TP, int | None]) -> None:
        """The partitions now owned and where they are read from."""
        for tp, nxt in start.items():
            self.holes.pop(tp, None)
            if nxt is None:
                self.applied.pop(tp, None)
                self.next_read.pop(tp, None)
            else:
                self.applied[tp] = nxt - 1
                self.next_read[tp] = nxt

    def revoked(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.next_read.pop(tp, None)
            self.holes.pop(tp, None)
            self.absent.pop(tp, None)

    def sought(self, tp: TP, offset: int) -> None:
        self.next_read[tp] = offset

    def on_hole(self, tp: TP, offset: int, expected: int) -> tuple[bool, bool]:
        """A delivered ``offset`` past the ``expected`` one: (accept it, seek back).

        The first time, the message is dropped and the partition sought back to
        ``expected``. Once the partition is read again from there (an offset at or below
        the highest dropped one arrives), a remaining hole is one the broker really has
        (compaction, transaction markers): accepted."""
        hole = self.holes.get(tp)
        if hole is None or hole.expected != expected:
            self.holes[tp] = _Hole(expected, offset)
            log.warning("%s[%d]: offset %d delivered while %d was expected; reading the "
                        "partition again from %d", tp[0], tp[1], offset, expected, expected)
            return False, True
        if offset <= hole.highest:
            del self.holes[tp]
            self.absent[tp] = (expected, offset)  # the batch may follow on across it
            log.warning("%s[%d]: offsets %d..%d are absent on the broker; going on from %d",
                        tp[0], tp[1], expected, offset - 1, offset)
            return True, False
        hole.highest = offset
        # still the messages fetched before the seek; seek again if it has not taken
        again = time.monotonic() - hole.since > 5.0
        if again:
            hole.since = time.monotonic()
        return False, again

    def delivered(self, tp: TP, offset: int) -> None:
        self.next_read[tp] = offset + 1
        if tp in self.holes:
            del self.holes[tp]

    # ------------------------------------------------------------ the agent

    def split(self, records: Sequence[Record]) -> Split:
        """Records at or below a partition's mark were applied before (skipped); the
        others must follow on from the mark, else the partition's rest is left out and
        must be read again from the mark + 1."""
        todo: list[Record] = []
        redelivered = 0
        nxt: dict[TP, int] = {}
        out_of_order: dict[TP, int] = {}
        last: dict[TP, int] = {}
        for rec in records:
            tp = (rec.topic, rec.partition)
            if tp in out_of_order:
                continue
            if tp not in nxt:
                mark = self.applied.get(tp)
                nxt[tp] = -1 if mark is None else mark + 1
            expected = nxt[tp]
            if rec.offset < expected:
                redelivered += 1
            elif (expected >= 0 and rec.offset > expected
                  and self.absent.get(tp) != (expected, rec.offset)):
                out_of_order[tp] = expected
            else:
                todo.append(rec)
                nxt[tp] = rec.offset + 1
                last[tp] = rec.offset
        return Split(todo, redelivered, out_of_order, last)

    def advance(self, last: Mapping[TP, int]) -> None:
        """The batch up to these offsets is applied (it followed on from the marks)."""
        for tp, offset in last.items():
            if offset > self.applied.get(tp, -1):
                self.applied[tp] = offset
            gap = self.absent.get(tp)
            if gap is not None and offset >= gap[1]:
                del self.absent[tp]

    def commit_points(self) -> dict[TP, int]:
        """What may be committed per partition: the next offset after the last applied."""
        return {tp: offset + 1 for tp, offset in self.applied.items()}
