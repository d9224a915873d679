"""The response cache's key against a real Redis and broker: only the validated, normalised
question counts (an unknown parameter, the order of the parameters, a default spelled out do
not make a new key), cold-start answers are kept once for every user with no stored state,
and a state change or a new model version still makes a new key."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
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
from recsys_core.dataset import Dataset
from serving.app import create_app
from serving.settings import ServingSettings
from streams.processor import Record, StreamProcessor
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration
OFFSETS = itertools.count()
HIT = 'recsys_api_cache_total{result="hit"}'


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


def client_for(devstack: DevStack, model_dir: Path) -> TestClient:
    name = new_name("key")
    settings = ServingSettings(kafka_bootstrap=devstack.kafka_bootstrap,
                               redis_url=devstack.redis_url, model_dir=model_dir,
                               key_prefix=name, topic_prefix=f"{name}.",
                               api_model_poll_seconds=0.2)
    create_topics(settings)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def api(devstack: DevStack, model_dir: Path) -> Iterator[TestClient]:
    with client_for(devstack, model_dir) as client:
        yield client


def seed(client: TestClient, user: str, movies: list[str]) -> None:
    settings: ServingSettings = client.app.state.settings  # type: ignore[attr-defined]
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys)
    view = load_view(settings.model_dir)
    records = [Record(encode(rating_event(f"{user}-{m}-{n}", user, m, 5.0, 880_000_000 + n)),
                      "ratings", 0, next(OFFSETS)) for n, m in enumerate(movies)]
    result = StreamProcessor(store, lambda: view).process("rating", records)
    assert result.outcomes.get("applied") == len(movies), result.outcomes


def hits(client: TestClient) -> float:
    line = [x for x in client.get("/metrics").text.splitlines() if x.startswith(HIT)]
    return float(line[0].split()[-1]) if line else 0.0


def recs(client: TestClient, user: str, query: str = "") -> dict[str, Any]:
    resp = client.get(f"/v1/users/{user}/recommendations{query}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_unknown_parameters_order_and_spelled_out_defaults_do_not_change_the_key(
        api: TestClient) -> None:
    user = new_name("warm")
    seed(api, user, ["50", "181", "172", "174", "96"])
    first = recs(api, user)
    same = ["?nonce=1", "?nonce=2&k=10", "?exclude_seen=true&k=10&surface=" +
            first["surface"], "?k=10&cachebuster=x&exclude_seen=1"]
    for query in same:  # both looks: before routing (2nd on) and the route's own (1st)
        before = hits(api)
        assert recs(api, user, query) == first, query
        assert hits(api) == before + 1, f"{query} missed the kept answer"
    drama = recs(api, user, "?genre=Drama&genre=Comedy&nonce=a")
    before = hits(api)
    assert recs(api, user, "?genre=comedy&genre=drama&nonce=b") == drama
    assert recs(api, user, "?nonce=c&genre=comedy&genre=Drama&genre=comedy") == drama
    assert hits(api) == before + 2
    # another question is another key; a bad one is still refused
    before = hits(api)
    assert recs(api, user, "?k=5")["items"] == first["items"][:5]
    assert hits(api) == before
    bad = api.get(f"/v1/users/{user}/recommendations?k=0&nonce=1")
    assert bad.status_code == 422 and bad.json()["error"]
    # a state change makes a new key
    top = first["items"][0]["movie_id"]
    seed(api, user, [top])
    before = hits(api)
    after = recs(api, user, "?nonce=9")
    assert top not in [it["movie_id"] for it in after["items"]] and hits(api) == before


def test_cold_start_answers_are_kept_once_for_every_user_without_state(
        api: TestClient) -> None:
    a, b = new_name("cold"), new_name("cold")
    first = recs(api, a, "?k=7")
    assert first["fallback_reason"] == "cold_start"
    before = hits(api)
    again = recs(api, a, "?k=7&nonce=1")
    assert again == first and hits(api) == before + 1, "a cold user's second request missed"
    other = recs(api, b, "?k=7")
    assert other["user_id"] == b and hits(api) == before + 2
    assert {**other, "user_id": a} == first
    # the first event makes the user's own key
    seed(api, a, ["50", "181"])
    before = hits(api)
    own = recs(api, a, "?k=7")
    assert own["fallback_reason"] is None and hits(api) == before
    assert recs(api, b, "?k=7") == other  # still the segment's for the other


def test_a_new_model_version_makes_a_new_key(devstack: DevStack, model_dir: Path,
                                             tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(model_dir, root)
    warm, cold = new_name("warm"), new_name("cold")
    with client_for(devstack, root) as c:
        seed(c, warm, ["50", "181", "172"])
        v1 = {u: recs(c, u) for u in (warm, cold)}
        assert {u: recs(c, u) for u in (warm, cold)} == v1  # kept
        registry = ModelRegistry(root)
        bundle = registry.load()
        bundle.version = 2
        bundle.item_factors = bundle.item_factors[:, ::-1].copy()
        bundle.yty = bundle.item_factors.T.astype(np.float64) @ bundle.item_factors
        bundle.popularity = bundle.popularity[::-1].copy()  # another cold-start answer
        registry.publish(bundle)
        wait_for(lambda: c.get("/v1/admin/model").json()["served_version"] == 2, 10,
                 "version 2 to be served")
        before = hits(c)
        v2 = {u: recs(c, u) for u in (warm, cold)}
        assert hits(c) == before
        assert all(v2[u]["model_version"] == 2 for u in v2)
        assert v2[cold]["items"] != v1[cold]["items"]
