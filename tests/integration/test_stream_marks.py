"""Applied marks and bounded dedupe against a real Redis: a redelivered offset is skipped
exactly, a producer's duplicate is dropped while in the user's id window, the window stays
bounded, and the partitions' marks only ever rise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from stream_harness import encode, rating_event

from adapters.redis_store import UserStateStore, offset_field
from devstack import DevStack
from recsys_core.keys import Keys
from streams.offsets import AppliedOffsets
from streams.processor import Record, StreamProcessor

pytestmark = pytest.mark.integration
T0 = 1_600_000_000.0
TOPIC = "marks.ratings.v1"


@pytest.fixture
def client(devstack: DevStack) -> Iterator[redis.Redis]:
    c = devstack.redis.client()
    yield c
    c.close()


def processor(client: redis.Redis, prefix: str, window: int = 64) -> StreamProcessor:
    store = UserStateStore(client, keys=Keys(prefix), dedupe_window=window)
    return StreamProcessor(store, lambda: None)


def test_a_redelivered_offset_is_skipped_and_a_new_one_applied(
    client: redis.Redis, unique_name: str
) -> None:
    p = processor(client, unique_name)
    user = f"{unique_name}-u"
    values = [encode(rating_event(f"{unique_name}-{n}", user, str(n + 1), 4.0, T0 + n))
              for n in range(6)]
    first = p.process("rating", [Record(v, TOPIC, 3, 100 + n) for n, v in enumerate(values[:4])])
    assert first.outcomes == {"applied": 4}
    # a redelivery from offset 102 (after a crash): 102 and 103 skipped, 104 and 105 new
    again = p.process("rating", [Record(v, TOPIC, 3, 100 + n)
                                 for n, v in enumerate(values) if n >= 2])
    assert again.outcomes == {"redelivered": 2, "applied": 2}
    keys = Keys(unique_name)
    assert client.hget(keys.meta(user), "rev") == b"6"
    assert client.hget(keys.meta(user), offset_field(TOPIC, 3)) == b"105"
    # another partition's offsets are marked apart
    other = encode(rating_event(f"{unique_name}-x", user, "50", 3.0, T0))
    assert p.process("rating", [Record(other, TOPIC, 1, 0)]).outcomes == {"applied": 1}


def test_a_duplicate_id_is_dropped_within_the_window_and_the_window_stays_bounded(
    client: redis.Redis, unique_name: str
) -> None:
    window = 8
    p = processor(client, unique_name, window)
    user = f"{unique_name}-u"
    events = [rating_event(f"{unique_name}-{n}", user, str(n + 1), 1.0 + n % 5, T0 + n)
              for n in range(30)]
    offset = 0

    def send(batch: list[dict[str, object]]) -> dict[str, int]:
        nonlocal offset
        records = []
        for e in batch:
            records.append(Record(encode(e), TOPIC, 0, offset))
            offset += 1
        return p.process("rating", records).outcomes

    assert send(events[:20]) == {"applied": 20}
    # a resend of the newest event at a later offset: within the window, dropped
    assert send([events[19]]) == {"duplicate": 1}
    keys = Keys(unique_name)
    assert client.zcard(keys.recent_event_ids(user)) == window
    history_before = client.hgetall(keys.history(user))
    # a resend of an old one (beyond the window) is applied again: the pair is unchanged
    assert send([events[0]]) == {"applied": 1}
    assert client.hgetall(keys.history(user)) == history_before
    assert client.zcard(keys.recent_event_ids(user)) == window


def test_partition_marks_only_rise(client: redis.Redis, unique_name: str) -> None:
    marks = AppliedOffsets(client, Keys(unique_name), [TOPIC])
    marks.record({(TOPIC, 0): 50, (TOPIC, 1): 7})
    marks.record({(TOPIC, 0): 40, (TOPIC, 1): 9})
    assert marks.read_marks([(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)]) == {
        (TOPIC, 0): 50, (TOPIC, 1): 9}
    start = marks.start_positions([(TOPIC, 0), (TOPIC, 2)], {(TOPIC, 0): 10, (TOPIC, 2): 3})
    # the Redis mark wins over Kafka's committed offset (either way); without one, Kafka's
    assert start == {(TOPIC, 0): 51, (TOPIC, 2): 3}
