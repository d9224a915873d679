"""The API when its Redis fails in the ways Redis fails: full (``maxmemory`` with
``noeviction``), a reply error, a paused server, a restart that comes back empty. Each test
runs a Redis of its own; reads answer (with a ``fallback_reason`` where the state could not be
read), never a 500, and an answer kept in the response cache never outlives the state it
was computed from."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from stream_harness import (
    create_topics,
    encode,
    load_view,
    new_name,
    rating_event,
    shared_model_dir,
    wait_for,
)

from adapters.redis_store import UserStateStore
from devstack import KafkaBroker, RedisServer
from recsys_core.dataset import Dataset
from serving.app import create_app
from serving.settings import ServingSettings
from streams.processor import Record, StreamProcessor

pytestmark = pytest.mark.integration
OFFSETS = itertools.count()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(log_dir=tmp_path) as server:
        yield server


def app_settings(broker: KafkaBroker, server: RedisServer, model_dir: Path,
                 **extra: Any) -> ServingSettings:
    name = new_name("fault")
    settings = ServingSettings(kafka_bootstrap=broker.bootstrap, redis_url=server.url,
                               model_dir=model_dir, key_prefix=name, topic_prefix=f"{name}.",
                               api_model_poll_seconds=0.2, **extra)
    create_topics(settings)
    return settings


def apply(settings: ServingSettings, events: list[dict[str, Any]]) -> None:
    """Apply rating events to Redis exactly as a stream worker would (at increasing offsets
    of one partition)."""
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys)
    view = load_view(settings.model_dir)
    records = [Record(encode(e), "ratings", 0, next(OFFSETS)) for e in events]
    result = StreamProcessor(store, lambda: view).process("rating", records)
    assert result.outcomes.get("applied") == len(events), result.outcomes
    store.r.close()


def fill_up(client: redis.Redis) -> None:
    """Set ``maxmemory`` just above what is used, under ``noeviction``, and write until
    Redis refuses: from then on every write answers OOM."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used + 256 * 1024))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for n in range(100_000):
            client.set(f"filler:{n}", b"x" * 4096)


def ids(body: dict[str, Any]) -> list[str]:
    return [it["movie_id"] for it in body["items"]]


def test_a_full_redis_never_gives_a_500(kafka_broker: KafkaBroker, own_redis: RedisServer,
                                        model_dir: Path) -> None:
    settings = app_settings(kafka_broker, own_redis, model_dir)
    user, stale = new_name("u"), new_name("stale")
    apply(settings, [rating_event(f"{user}-{m}", user, m, 5.0, 880_000_000 + n)
                     for n, m in enumerate(["50", "181", "172"])])
    apply(settings, [rating_event(f"{stale}-{m}", stale, m, 4.0, 880_000_000 + n)
                     for n, m in enumerate(["1", "71"])])
    client = own_redis.client()
    # a vector the API must refold and then tries to store (a write, refused when full)
    client.hdel(settings.keys.meta(stale), "vector")
    with TestClient(create_app(settings), raise_server_exceptions=True) as c:
        fill_up(client)
        for _ in range(3):
            for who in (user, stale, new_name("cold")):
                r = c.get(f"/v1/users/{who}/recommendations")
                assert r.status_code == 200, r.text
                assert len(r.json()["items"]) == 10
            r = c.get(f"/v1/users/{user}")
            assert r.status_code == 200, r.text
            assert c.get(f"/v1/users/{user}/because-you-watched").status_code == 200
            assert c.get(f"/v1/users/{user}/predicted-rating/50").status_code == 200
            assert c.get("/v1/admin/lag").status_code == 200
            assert c.get("/v1/movies/50").status_code == 200
        # writes go to the broker, not to Redis: still accepted
        r = c.post("/v1/events", json={"events": [
            {"type": "rating", "user_id": user, "movie_id": "50", "rating": 3}]})
        assert r.status_code == 202, r.text
        text = c.get("/metrics").text
        assert 'status="500"' not in text
    client.close()


def test_redis_error_replies_fall_back_or_answer_503_with_retry_after(
    kafka_broker: KafkaBroker, own_redis: RedisServer, model_dir: Path
) -> None:
    settings = app_settings(kafka_broker, own_redis, model_dir)
    user = new_name("u")
    apply(settings, [rating_event(f"{user}-{m}", user, m, 5.0, 880_000_000 + n)
                     for n, m in enumerate(["50", "181", "172"])])
    client = own_redis.client()
    with TestClient(create_app(settings)) as c:
        assert c.get(f"/v1/users/{user}/recommendations").json()["fallback_reason"] is None
        # a reply error (WRONGTYPE, a ResponseError) on the user's keys and the lag hash
        client.delete(settings.keys.meta(user), settings.keys.lag())
        client.set(settings.keys.meta(user), b"not a hash")
        client.set(settings.keys.lag(), b"not a hash")
        r = c.get(f"/v1/users/{user}/recommendations")
        assert r.status_code == 200, r.text
        assert r.json()["fallback_reason"] == "user_state_unavailable"
        for path in (f"/v1/users/{user}", "/v1/admin/lag"):
            r = c.get(path)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "user_state_unavailable" and r.json()["detail"]
            assert int(r.headers["Retry-After"]) > 0
        # a paused server: reads time out and fall back at once
        client.client_pause(3000)
        try:
            r = c.get(f"/v1/users/{new_name('p')}/recommendations")
            assert r.status_code == 200, r.text
            assert r.json()["fallback_reason"] == "user_state_unavailable"
        finally:
            client.client_unpause()
    client.close()


@pytest.mark.parametrize("reset", ["restart", "flushall"])
def test_after_redis_comes_back_empty_no_kept_answer_is_served(
    kafka_broker: KafkaBroker, tmp_path: Path, model_dir: Path, reset: str
) -> None:
    """Revisions start again at 1 in an empty Redis: the same user with as many new events
    has the revision of an answer kept before. The answer must be the new state's."""
    server = RedisServer(log_dir=tmp_path / "first")
    server.start()
    try:
        settings = app_settings(kafka_broker, server, model_dir)
        user = new_name("u")
        apply(settings, [rating_event(f"{user}-{m}", user, m, 5.0, 880_000_000 + n)
                         for n, m in enumerate(["50", "181", "172"])])
        with TestClient(create_app(settings)) as c:
            tracker = c.app.state.tracker  # type: ignore[attr-defined]
            url = f"/v1/users/{user}/recommendations"
            before = c.get(url).json()
            assert c.get(url).json() == before  # kept
            if reset == "restart":
                port = server.port
                server.stop()
                server = RedisServer(port=port, log_dir=tmp_path / "second")
                server.start()
            else:
                client = server.client()
                client.flushall()
                client.close()
            # the user rates the movies of the old answer's top three: revision 3 again
            top = ids(before)[:3]
            apply(settings, [rating_event(f"{user}-again-{m}", user, m, 5.0, 890_000_000 + n)
                             for n, m in enumerate(top)])
            wait_for(lambda: tracker.up, 10, "the state tracker to reconnect")
            # a restart may have opened the API's Redis breaker: it closes within seconds
            wait_for(lambda: c.get(url).json()["fallback_reason"] is None, 15,
                     "the API to read Redis again")
            for _ in range(3):  # computed, then kept
                after = c.get(url).json()
                assert after["fallback_reason"] is None
                assert not set(top) & set(ids(after)), (top, ids(after))
                assert ids(after) != ids(before)
            assert c.get(f"/v1/users/{user}").json()["events_applied"] == 3
    finally:
        server.stop()
