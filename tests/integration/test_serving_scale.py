"""The API's large-catalogue and cached paths against a real Redis: candidate scoring (the
threshold forced low on ml-100k) and answers served from the response cache on the strength
of Redis invalidations (CLIENT TRACKING), never stale."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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
from devstack import DevStack
from recsys_core.candidates import CandidateIndex, recommend_candidates
from recsys_core.dataset import Dataset
from recsys_core.scoring import BlendWeights
from recsys_core.userstate import history_from_pairs
from serving.app import create_app
from serving.settings import ServingSettings
from serving.tracking import StateTracker
from streams.processor import Record, StreamProcessor
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration
OFFSETS = itertools.count()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


def make_api(devstack: DevStack, model_dir: Path, **extra: Any) -> TestClient:
    name = new_name("scale")
    settings = ServingSettings(kafka_bootstrap=devstack.kafka_bootstrap,
                               redis_url=devstack.redis_url, model_dir=model_dir,
                               key_prefix=name, topic_prefix=f"{name}.",
                               api_model_poll_seconds=0.2, **extra)
    create_topics(settings)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def candidate_api(devstack: DevStack, model_dir: Path) -> Iterator[TestClient]:
    with make_api(devstack, model_dir, api_candidate_threshold=0, api_cache_size=0) as c:
        yield c


@pytest.fixture(scope="module")
def cached_api(devstack: DevStack, model_dir: Path) -> Iterator[TestClient]:
    with make_api(devstack, model_dir, api_cache_size=1000) as c:
        wait_for(lambda: c.app.state.tracker.up, 10, "state tracking")  # type: ignore
        yield c


def settings_of(client: TestClient) -> ServingSettings:
    return client.app.state.settings  # type: ignore[attr-defined,no-any-return]


def seed(client: TestClient, events: list[dict[str, Any]]) -> None:
    settings = settings_of(client)
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys)
    view = load_view(settings.model_dir)
    processor = StreamProcessor(store, lambda: view)
    # increasing offsets, as a partition's: an offset at or below one applied is a redelivery
    result = processor.process("rating", [Record(encode(e), "ratings", 0, next(OFFSETS))
                                          for e in events])
    assert result.outcomes.get("applied") == len(events), result.outcomes


def dataset_user(dataset: Dataset, raw_user: str, user: str, n: int) -> list[dict[str, Any]]:
    rows = dataset.interactions[dataset.interactions["user_id"] == raw_user]
    rows = rows.sort_values("timestamp", kind="stable").iloc[:n]
    return [rating_event(f"{user}-{r.movie_id}", user, str(r.movie_id), float(r.rating),
                         float(r.timestamp)) for r in rows.itertuples()]


def ids(body: dict[str, Any]) -> list[str]:
    return [it["movie_id"] for it in body["items"]]


def hits(client: TestClient) -> float:
    metric = 'recsys_api_cache_total{result="hit"}'
    line = [x for x in client.get("/metrics").text.splitlines() if x.startswith(metric)]
    return float(line[0].split()[-1]) if line else 0.0


# ------------------------------------------------------------------ candidate scoring


def test_candidate_scoring_through_the_api_equals_the_core_candidate_scorer(
        candidate_api: TestClient, ml100k: Dataset) -> None:
    settings = settings_of(candidate_api)
    assert candidate_api.app.state.service.holder.model.candidates is not None  # type: ignore
    bundle = ModelRegistry(settings.model_dir).load()
    weights = BlendWeights.from_dict(bundle.manifest.get("blend_weights", {}))
    index = CandidateIndex.build(bundle)
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys)
    for raw in ("196", "13", "405"):
        user = new_name("cand")
        seed(candidate_api, dataset_user(ml100k, raw, user, 60))
        body = candidate_api.get(f"/v1/users/{user}/recommendations").json()
        snap = store.read([user], int(bundle.item_factors.shape[1]))[0]
        history, _ = history_from_pairs(snap.pairs, bundle, load_view(settings.model_dir).rule)
        found = recommend_candidates(bundle, index, history, weights, k=10)
        assert found is not None
        assert ids(body) == [bundle.movies.raw(int(i)) for i in found[0]]
        assert np.allclose([it["score"] for it in body["items"]], np.round(found[1], 4))
        assert all(it["reason"] for it in body["items"])
    # a filter that leaves too few candidates falls back to the whole catalogue
    r = candidate_api.get(f"/v1/users/{user}/recommendations",
                          params={"genre": "Documentary", "k": 10})
    assert r.status_code == 200 and len(r.json()["items"]) == 10


# ------------------------------------------------------------------ tracked cache


def test_a_known_users_answer_is_served_without_reading_redis_until_the_state_changes(
        cached_api: TestClient, ml100k: Dataset) -> None:
    tracker: StateTracker = cached_api.app.state.tracker  # type: ignore[attr-defined]
    settings = settings_of(cached_api)
    user = new_name("t")
    seed(cached_api, dataset_user(ml100k, "200", user, 20))
    first = cached_api.get(f"/v1/users/{user}/recommendations").json()
    meta = settings.keys.meta(user)
    wait_for(lambda: tracker._known.get(meta) is not None, 5, "the revision remembered")
    before = hits(cached_api)
    reads = cached_api.app.state.service.state  # type: ignore[attr-defined]
    calls = 0
    original = reads.user_epoch_async

    async def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await original(*args)

    reads.user_epoch_async = counting
    try:
        again = cached_api.get(f"/v1/users/{user}/recommendations").json()
        assert again == first and hits(cached_api) == before + 1
        assert calls == 0  # answered from the cache alone
        # a new event: Redis invalidates the user, the next answer is recomputed
        top = first["items"][0]["movie_id"]
        seed(cached_api, [rating_event(f"{user}-new", user, top, 1.0, 890_000_000)])
        after = cached_api.get(f"/v1/users/{user}/recommendations").json()
        assert top not in ids(after)
        assert calls == 1 and hits(cached_api) == before + 1
    finally:
        reads.user_epoch_async = original


def test_a_write_during_the_read_is_never_remembered_as_current(
        devstack: DevStack) -> None:
    prefix = new_name("trk")
    key = f"{prefix}:uv:{{u1}}"
    client = redis.Redis.from_url(devstack.redis_url)

    async def scenario() -> None:
        tracker = StateTracker(devstack.redis_url, f"{prefix}:uv:{{", size=10)
        await tracker.maintain()
        assert tracker.up
        try:
            # a read, with a write landing before its answer is used: not remembered
            token = tracker.begin(key)
            client.hincrby(key, "rev", 1)
            await asyncio.sleep(0.05)
            tracker.end(key, token, 1)
            assert tracker.known(key) is None
            # a read with no write meanwhile: remembered, until the next write
            token = tracker.begin(key)
            tracker.end(key, token, 1)
            assert tracker.known(key) == 1
            client.hset(key, "vector", b"x")
            deadline = asyncio.get_running_loop().time() + 5
            while tracker.known(key) is not None:  # drained on lookup
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.001)
            # other users' keys and other prefixes do not touch it
            tracker.end(key, tracker.begin(key), 2)
            client.hincrby(f"{prefix}:uv:{{u2}}", "rev", 1)
            client.hincrby(f"{prefix}x:uv:{{u1}}", "rev", 1)
            await asyncio.sleep(0.05)
            assert tracker.known(key) == 2
            # the connection lost: everything is forgotten
            client.client_kill_filter(_id=str(tracker.client_id))
            while tracker.up:
                assert asyncio.get_running_loop().time() < deadline + 5
                await asyncio.sleep(0.01)
            assert tracker.known(key) is None and tracker.begin(key) is None
            await tracker.maintain()
            assert tracker.up and tracker.known(key) is None
        finally:
            tracker.close()

    asyncio.run(scenario())
