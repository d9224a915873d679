"""The applied marks' bookkeeping (streams.offsets): what a batch applies, skips, or sends
back to be read again; where an assigned partition starts; what may be committed."""

from __future__ import annotations

import redis

from recsys_core.keys import Keys
from streams.offsets import AppliedOffsets
from streams.processor import Record

TOPIC = "ratings.v1"


def offsets() -> AppliedOffsets:
    # no connection is made by these tests (Redis is only read in start_positions)
    return AppliedOffsets(redis.Redis(port=1), Keys("t"), [TOPIC])


def recs(partition: int, *offs: int) -> list[Record]:
    return [Record(b"{}", TOPIC, partition, o) for o in offs]


def test_a_batch_following_on_from_the_mark_is_applied_whole() -> None:
    o = offsets()
    o.assigned({(TOPIC, 0): 10, (TOPIC, 1): 0})
    split = o.split(recs(0, 10, 11, 12) + recs(1, 0, 1))
    assert [r.offset for r in split.todo] == [10, 11, 12, 0, 1]
    assert split.last == {(TOPIC, 0): 12, (TOPIC, 1): 1}
    assert not split.out_of_order and split.redelivered == 0
    o.advance(split.last)
    assert o.commit_points() == {(TOPIC, 0): 13, (TOPIC, 1): 2}


def test_offsets_at_or_below_the_mark_are_skipped_as_redelivered() -> None:
    o = offsets()
    o.assigned({(TOPIC, 0): 10})
    split = o.split(recs(0, 7, 8, 9, 10, 11))
    assert [r.offset for r in split.todo] == [10, 11]
    assert split.redelivered == 3


def test_a_hole_leaves_the_partitions_rest_out_and_asks_for_it_again() -> None:
    o = offsets()
    o.assigned({(TOPIC, 0): 10, (TOPIC, 1): 5})
    split = o.split(recs(0, 10, 11, 14, 15) + recs(1, 5, 6))
    assert [(r.partition, r.offset) for r in split.todo] == [(0, 10), (0, 11), (1, 5), (1, 6)]
    assert split.out_of_order == {(TOPIC, 0): 12}
    o.advance(split.last)
    # nothing past the hole is ever committed
    assert o.commit_points()[(TOPIC, 0)] == 12


def test_without_a_known_start_the_first_offset_delivered_starts_the_partition() -> None:
    o = offsets()
    o.assigned({(TOPIC, 0): None})
    split = o.split(recs(0, 40, 41))
    assert [r.offset for r in split.todo] == [40, 41]
    o.advance(split.last)
    assert o.commit_points() == {(TOPIC, 0): 42}


def test_other_topics_are_not_followed() -> None:
    o = offsets()
    assert o.guarded(TOPIC) and not o.guarded("catalog.v1")


def test_a_hole_is_read_again_once_then_accepted_if_the_broker_has_no_such_offsets() -> None:
    o = offsets()
    tp = (TOPIC, 0)
    # offset 12 arrives while 10 is expected: dropped, sought back
    assert o.on_hole(tp, 12, 10) == (False, True)
    # the rest of the fetch made before the seek: dropped, no second seek at once
    assert o.on_hole(tp, 13, 10) == (False, False)
    # read again from 10, the first offset there is 12 again: the broker has no 10 and 11
    assert o.on_hole(tp, 12, 10) == (True, False)
    assert tp not in o.holes


def test_a_batch_goes_on_across_a_hole_the_broker_does_not_have() -> None:
    # a broker that lost offsets 10 and 11 in a crash: the consumer accepts 12 after
    # reading again; the batch must follow on across it too, else the partition loops
    o = offsets()
    tp = (TOPIC, 0)
    o.assigned({tp: 8})
    o.advance(o.split(recs(0, 8, 9)).last)
    assert o.on_hole(tp, 12, 10) == (False, True)
    assert o.on_hole(tp, 12, 10) == (True, False)
    split = o.split(recs(0, 12, 13))
    assert [r.offset for r in split.todo] == [12, 13] and not split.out_of_order
    o.advance(split.last)
    assert o.commit_points() == {tp: 14} and tp not in o.absent
    # a later, other hole is still sent back to be read again
    assert o.split(recs(0, 16)).out_of_order == {tp: 14}


def test_the_expected_offset_arriving_ends_a_hole() -> None:
    o = offsets()
    tp = (TOPIC, 0)
    assert o.on_hole(tp, 12, 10) == (False, True)
    o.delivered(tp, 10)
    assert tp not in o.holes and o.next_read[tp] == 11


def test_start_positions_fall_back_to_kafka_when_redis_cannot_be_read() -> None:
    o = offsets()
    tps = [(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)]
    o.applied[(TOPIC, 1)] = 99
    start = o.start_positions(tps, {(TOPIC, 0): 7, (TOPIC, 2): -1})
    assert start == {(TOPIC, 0): 7, (TOPIC, 1): 100, (TOPIC, 2): None}
