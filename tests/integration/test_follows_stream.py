"""Follows through the stream's processor against a real Redis: follow and unfollow
applied once whatever the delivery, the follower sets, inboxes filled by fan-out and by the
backfill of a new follow, and bad follow events dead-lettered with a reason."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from stream_harness import (
    create_topics,
    encode,
    iso,
    load_view,
    rating_event,
    read_topic,
    shared_model_dir,
    watch_event,
)

from adapters.follow_store import FollowStore
from adapters.redis_store import UserStateStore
from adapters.settings import CommonSettings
from devstack import DevStack, RedisServer
from recsys_core.dataset import Dataset
from recsys_core.events import EventType
from recsys_core.keys import Keys
from streams.processor import BatchResult, ModelView, Record, StreamProcessor

pytestmark = pytest.mark.integration

T0 = datetime(2020, 1, 1, tzinfo=UTC).timestamp()


def follow_event(event_id: str, user: str, followee: str, ts: float,
                 action: str = "follow") -> dict[str, object]:
    return {"event_id": event_id, "user_id": user, "followee_id": followee,
            "occurred_at": iso(ts), "action": action}


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> ModelView:
    return load_view(shared_model_dir(tmp_path_factory.getbasetemp(), ml100k))


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis_server.client()
    yield c
    c.close()


class Harness:
    def __init__(self, client: redis.Redis, view: ModelView, prefix: str) -> None:
        self.keys = Keys(prefix)
        self.processor = StreamProcessor(UserStateStore(client, keys=self.keys), lambda: view)
        self.follows = FollowStore(client, self.keys)
        self._offset = 0

    def apply(self, kind: EventType, events: Sequence[dict[str, object] | bytes]
              ) -> BatchResult:
        records = []
        for e in events:
            raw = e if isinstance(e, bytes) else encode(e)
            records.append(Record(raw, f"{kind}s.v1", 0, self._offset, None))
            self._offset += 1
        return self.processor.process(kind, records)

    def inbox(self, user: str) -> list[tuple[str, str, float | None]]:
        _, entries = self.follows.read(user)
        return [(e.followee, e.movie_id, e.rating) for e in entries]


@pytest.fixture
def h(client: redis.Redis, view: ModelView, unique_name: str) -> Harness:
    return Harness(client, view, unique_name)


def test_follow_and_unfollow_apply_once_and_the_newest_wins(h: Harness) -> None:
    f1 = follow_event("f1", "ana", "bo", T0)
    u2 = follow_event("u2", "ana", "bo", T0 + 10, "unfollow")
    f3 = follow_event("f3", "ana", "cy", T0 + 5)
    first = h.apply("follow", [f1, f3])
    assert first.outcomes == {"applied": 2}
    assert h.follows.followers_of("bo") == {"ana"}
    # redelivered, then an unfollow, then the old follow again, late: it changes nothing
    again = h.apply("follow", [f1, u2, f1, {**f1, "event_id": "f1-resent"}])
    assert again.outcomes == {"duplicate": 3, "applied": 1}
    follows, _ = h.follows.read("ana")
    assert set(follows) == {"cy"}
    assert h.follows.followers_of("bo") == set()
    assert h.follows.followers_of("cy") == {"ana"}
    # a newer follow follows again
    assert h.apply("follow", [follow_event("f4", "ana", "bo", T0 + 20)]).outcomes == {
        "applied": 1}
    assert h.follows.followers_of("bo") == {"ana"}


def test_bad_follow_events_are_dead_lettered_with_a_reason(h: Harness) -> None:
    result = h.apply("follow", [
        follow_event("s", "ana", "ana", T0),
        follow_event("b", "ana", "bad/id", T0),
        {**follow_event("a", "ana", "bo", T0), "action": "like"},
        b"",
        follow_event("ok", "ana", "bo", T0),
    ])
    reasons = [json.loads(d.value)["reason"] for d in result.dead_letters]
    assert reasons == ["out_of_range", "out_of_range", "wrong_type", "empty"]
    assert result.outcomes == {"invalid": 4, "applied": 1}
    assert h.follows.followers_of("bo") == {"ana"}


def test_ratings_and_watches_fan_out_to_followers_and_a_new_follow_is_backfilled(
        h: Harness) -> None:
    # bo rated two movies before anyone followed him: a new follow brings them in
    h.apply("rating", [rating_event("r1", "bo", "50", 5.0, T0),
                       rating_event("r2", "bo", "100", 2.0, T0 + 1)])
    h.apply("follow", [follow_event("f1", "ana", "bo", T0 + 2),
                       follow_event("f2", "cy", "bo", T0 + 2)])
    assert sorted(h.inbox("ana")) == [("bo", "100", 2.0), ("bo", "50", 5.0)]
    # then each new event of bo's reaches both followers once, even when delivered twice
    later = [rating_event("r3", "bo", "181", 4.0, T0 + 3),
             watch_event("w1", "bo", "1", T0 + 4, completion=0.9)]
    h.apply("rating", later[:1])
    h.apply("watch", later[1:])
    h.apply("rating", later[:1])
    for fan in ("ana", "cy"):
        got = h.inbox(fan)
        assert len(got) == 4 and got[0] == ("bo", "1", None) and got[1] == ("bo", "181", 4.0)
    # an unfollow hides bo's entries at once; nobody else's inbox has them
    h.apply("follow", [follow_event("u1", "cy", "bo", T0 + 5, "unfollow")])
    assert h.inbox("cy") == []
    assert len(h.inbox("ana")) == 4
    assert h.inbox("bo") == []


def test_cli_loads_an_edge_list_as_follow_events_the_processor_applies(
        devstack: DevStack, h: Harness, tmp_path: Path, unique_name: str) -> None:
    from typer.testing import CliRunner

    from recsys_cli.main import app

    settings = CommonSettings(kafka_bootstrap=devstack.kafka_bootstrap,
                              topic_prefix=f"{unique_name}.")
    create_topics(settings)
    edges = tmp_path / "edges.csv"
    edges.write_text("follower,followee,timestamp\nana,bo,1600000000\nana,cy,1600000001\n"
                     "cy,ana\n")
    args = ["follows", "load", str(edges), "--kafka-bootstrap", devstack.kafka_bootstrap,
            "--topic-prefix", f"{unique_name}."]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sent 3 follows of 2 users" in result.output
    # loading the same file twice sends the same event ids: applied once
    assert CliRunner().invoke(app, args).exit_code == 0
    records = read_topic(devstack.kafka_bootstrap, settings.topic("follow"), 6)
    applied = h.processor.process("follow", [
        Record(r.value, r.topic, r.partition, r.offset, r.key) for r in records])
    assert applied.outcomes == {"applied": 3, "duplicate": 3}
    assert h.follows.followers_of("bo") == {"ana"}
    assert h.follows.followers_of("ana") == {"cy"}
    # a bad file: a clear message naming the line, non-zero exit, nothing sent
    edges.write_text("ana,bo\nana,ana\n")
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 1 and "line 2" in bad.output and "follows themselves" in bad.output
