"""The API's follows and "From people you follow" row, against a real Redis and broker:
follow writes are produced to follows.v1 (read back from Kafka) and, applied by the
stream's processor, change the row; movies the user has seen never appear in it."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from stream_harness import (
    create_topics,
    encode,
    iso,
    load_view,
    new_name,
    rating_event,
    read_topic,
    shared_model_dir,
)

from adapters.redis_store import UserStateStore
from devstack import DevStack
from recsys_core.dataset import Dataset
from serving.app import create_app
from serving.settings import ServingSettings
from streams.processor import Record, StreamProcessor

pytestmark = pytest.mark.integration
OFFSETS = itertools.count()
T0 = 1_600_000_000.0


def settings_for(devstack: DevStack, tmp_path_factory: pytest.TempPathFactory,
                 ml100k: Dataset, label: str, **extra: Any) -> ServingSettings:
    name = new_name(label)
    return ServingSettings(kafka_bootstrap=devstack.kafka_bootstrap,
                           redis_url=devstack.redis_url,
                           model_dir=shared_model_dir(tmp_path_factory.getbasetemp(), ml100k),
                           key_prefix=name, topic_prefix=f"{name}.", **extra)


@pytest.fixture(scope="module")
def api(devstack: DevStack, tmp_path_factory: pytest.TempPathFactory,
        ml100k: Dataset) -> Iterator[TestClient]:
    settings = settings_for(devstack, tmp_path_factory, ml100k, "social",
                            api_model_poll_seconds=0.2, api_cache_size=0)
    create_topics(settings)
    with TestClient(create_app(settings)) as client:
        yield client


def apply(client: TestClient, kind: str, events: list[dict[str, Any]]) -> None:
    """Apply events to the API's Redis exactly as a stream worker would."""
    settings: ServingSettings = client.app.state.settings  # type: ignore[attr-defined]
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys)
    view = load_view(settings.model_dir)
    records = [Record(encode(e), kind, 0, next(OFFSETS)) for e in events]
    result = StreamProcessor(store, lambda: view).process(kind, records)  # type: ignore[arg-type]
    assert result.outcomes.get("applied") == len(events), result.outcomes


def follow(user: str, followee: str, ts: float, action: str = "follow") -> dict[str, Any]:
    return {"event_id": f"{user}-{followee}-{ts}", "user_id": user, "followee_id": followee,
            "occurred_at": iso(ts), "action": action}


def test_follow_writes_go_to_the_follows_topic(api: TestClient, unique_name: str) -> None:
    settings: ServingSettings = api.app.state.settings  # type: ignore[attr-defined]
    user = f"{unique_name}-a"
    r = api.post(f"/v1/users/{user}/follows", json={"followee_id": "196"})
    assert r.status_code == 202, r.text
    d = api.delete(f"/v1/users/{user}/follows/196")
    assert d.status_code == 202, d.text
    got = [json.loads(m.value) for m in read_topic(
        settings.kafka_bootstrap, settings.topic("follow"), 2) if m.key == user.encode()]
    assert [(e["followee_id"], e["action"]) for e in got] == [("196", "follow"),
                                                              ("196", "unfollow")]
    # bad input: a 4xx with the error shape, nothing produced
    for bad in ({"followee_id": user}, {"followee_id": "a/b"}, {"who": "1"}):
        resp = api.post(f"/v1/users/{user}/follows", json=bad)
        assert resp.status_code == 422, resp.text
        assert set(resp.json()) >= {"error", "detail"}


def test_from_follows_ranks_what_followees_liked_and_never_what_the_user_saw(
        api: TestClient, unique_name: str) -> None:
    me, ana, bo = (f"{unique_name}-{n}" for n in ("me", "ana", "bo"))
    apply(api, "rating", [rating_event(f"{me}-1", me, "50", 4.0, T0)])
    apply(api, "follow", [follow(me, ana, T0 + 1), follow(me, bo, T0 + 1)])
    assert api.get(f"/v1/users/{me}/from-follows").json()["items"] == []
    apply(api, "rating", [
        rating_event(f"{ana}-1", ana, "181", 5.0, T0 + 2),
        rating_event(f"{bo}-1", bo, "181", 5.0, T0 + 3),
        rating_event(f"{bo}-2", bo, "100", 4.0, T0 + 3),
        rating_event(f"{bo}-3", bo, "50", 5.0, T0 + 3),  # the user rated it already
        rating_event(f"{bo}-4", bo, "1", 2.0, T0 + 3),  # a low rating recommends nothing
    ])
    body = api.get(f"/v1/users/{me}/from-follows", params={"k": 5}).json()
    assert body["follows"] == 2
    assert [it["movie_id"] for it in body["items"]] == ["181", "100"]
    top = body["items"][0]
    assert top["followees"] == [bo, ana] and top["title"]  # the newer 5★ first
    assert top["reason"].endswith("and 1 other you follow rated this 5★")
    listed = api.get(f"/v1/users/{me}/follows").json()["follows"]
    assert {f["user_id"] for f in listed} == {ana, bo}
    # an unfollow takes bo's movies out at once
    apply(api, "follow", [follow(me, bo, T0 + 4, "unfollow")])
    body = api.get(f"/v1/users/{me}/from-follows").json()
    assert [it["movie_id"] for it in body["items"]] == ["181"]
    assert body["items"][0]["reason"] == f"user {ana} you follow rated this 5★"


def test_every_write_of_a_users_data_needs_the_events_key(
        devstack: DevStack, tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> None:
    settings = settings_for(devstack, tmp_path_factory, ml100k, "social-keyed",
                            api_events_key="e" * 32, api_admin_key="a" * 32)
    with TestClient(create_app(settings)) as client:
        for method, path in (("POST", "/v1/users/1/follows"),
                             ("DELETE", "/v1/users/1/follows/2")):
            resp = client.request(method, path, json={"followee_id": "2"})
            assert resp.status_code == 401, (method, path, resp.text)
            assert resp.json()["error"] == "missing_api_key"
        assert client.get("/v1/users/1/follows").status_code == 200  # reads stay open
