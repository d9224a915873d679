"""``exclude_seen`` never forgets: a user whose history is well over the cap (cap 50, 120
ratings) never gets any of the 120 back, from the full blend, from the candidate path of a
large catalogue, nor from "because you watched", against a real Redis and the stream's own
Lua merge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from stream_harness import create_topics, encode, load_view, new_name, shared_model_dir

from adapters.redis_store import UserStateStore
from devstack import DevStack
from recsys_core.dataset import Dataset
from recsys_core.scoring import BlendWeights, recommend
from recsys_core.userstate import history_from_pairs
from serving.app import create_app
from serving.settings import ServingSettings
from streams.processor import Record, StreamProcessor
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration

CAP = 50
RATED = 120


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


def api_for(devstack: DevStack, model_dir: Path, **extra: Any) -> TestClient:
    name = new_name("seen")
    settings = ServingSettings(kafka_bootstrap=devstack.kafka_bootstrap,
                               redis_url=devstack.redis_url, model_dir=model_dir,
                               key_prefix=name, topic_prefix=f"{name}.",
                               user_history_cap=CAP, api_model_poll_seconds=0.2, **extra)
    create_topics(settings)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def api(devstack: DevStack, model_dir: Path) -> Iterator[TestClient]:
    with api_for(devstack, model_dir) as client:
        yield client


def heavy_user(ml100k: Dataset, user: str) -> list[dict[str, Any]]:
    """The first ``RATED`` ratings, in time order, of the ml-100k user with most ratings,
    as events of the new user ``user``, each a second apart (so the cap drops the oldest)."""
    inter = ml100k.interactions
    top = inter["user_id"].value_counts().index[0]
    rows = inter[inter["user_id"] == top].sort_values("timestamp", kind="stable").iloc[:RATED]
    return [{"event_id": f"{user}-{n}", "user_id": user, "movie_id": str(r.movie_id),
             "rating": float(r.rating), "occurred_at": f"2001-01-01T00:{n // 60:02d}:"
             f"{n % 60:02d}Z"} for n, r in enumerate(rows.itertuples())]


def stream_in(client: TestClient, events: list[dict[str, Any]]) -> UserStateStore:
    """Apply the events to the API's Redis as a stream worker does (same cap)."""
    settings: ServingSettings = client.app.state.settings  # type: ignore[attr-defined]
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys,
                                    cap=settings.user_history_cap)
    view = load_view(settings.model_dir)
    processor = StreamProcessor(store, lambda: view)
    records = [Record(encode(e), "ratings", 0, n) for n, e in enumerate(events)]
    for start in range(0, len(records), 25):  # several batches: the cap trims each time
        result = processor.process("rating", records[start:start + 25])
        assert result.outcomes.get("applied") == len(records[start:start + 25])
    return store


def ids(body: dict[str, Any]) -> set[str]:
    return {it["movie_id"] for it in body["items"]}


def capped_only_top(store: UserStateStore, model_dir: Path, user: str, k: int) -> set[str]:
    """The top-k with only the capped history excluded (the old rule), to show that the
    dropped movies do rank high: without the seen set they would come back."""
    bundle = ModelRegistry(model_dir).load()
    view = load_view(model_dir)
    snap = store.read([user], view.factors)[0]
    history, _ = history_from_pairs(snap.table, bundle, view.rule)
    weights = BlendWeights.from_dict(bundle.manifest.get("blend_weights", {}))
    idx, _, _ = recommend(bundle, history, weights, k)
    return {bundle.movies.raw(int(i)) for i in idx}


def test_the_store_keeps_every_movie_the_cap_dropped(api: TestClient, ml100k: Dataset) -> None:
    user = new_name("u")
    events = heavy_user(ml100k, user)
    store = stream_in(api, events)
    snap = store.read([user], 0, seen=True)[0]
    rated = {e["movie_id"] for e in events}
    assert len(snap.table) == CAP
    assert len(snap.dropped) == RATED - CAP
    assert set(snap.table.movie_ids) | snap.dropped == rated
    # the newest CAP stay in the history, the oldest were dropped
    assert set(snap.table.movie_ids) == {e["movie_id"] for e in events[-CAP:]}


def test_recommendations_never_return_a_movie_rated_before_the_cap(
    api: TestClient, ml100k: Dataset, model_dir: Path
) -> None:
    user = new_name("u")
    events = heavy_user(ml100k, user)
    store = stream_in(api, events)
    rated = {e["movie_id"] for e in events}
    dropped = rated - {e["movie_id"] for e in events[-CAP:]}
    old_rule = capped_only_top(store, model_dir, user, 100)
    assert old_rule & dropped, "the dropped movies should rank high under the old rule"
    r = api.get(f"/v1/users/{user}/recommendations", params={"k": 100})
    assert r.status_code == 200, r.text
    got = ids(r.json())
    assert len(got) == 100
    assert not got & rated
    # asked not to exclude seen movies, the dropped ones may come back
    r = api.get(f"/v1/users/{user}/recommendations",
                params={"k": 100, "exclude_seen": "false"})
    assert ids(r.json()) & dropped
    r = api.get(f"/v1/users/{user}/because-you-watched", params={"k": 50})
    assert r.status_code == 200, r.text
    assert r.json()["items"] and not ids(r.json()) & rated


def test_the_candidate_path_excludes_the_dropped_movies_too(
    devstack: DevStack, ml100k: Dataset, model_dir: Path
) -> None:
    # a threshold under ml-100k's catalogue: served from candidates, as a large catalogue is
    with api_for(devstack, model_dir, api_candidate_threshold=100) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        assert service.holder.require().candidates is not None
        user = new_name("u")
        events = heavy_user(ml100k, user)
        stream_in(client, events)
        rated = {e["movie_id"] for e in events}
        r = client.get(f"/v1/users/{user}/recommendations", params={"k": 100})
        assert r.status_code == 200, r.text
        got = ids(r.json())
        assert len(got) == 100 and not got & rated
        assert np.isfinite([it["score"] for it in r.json()["items"]]).all()
