"""The API with a model that carries a reranker, against a real Redis and broker: answers
equal the core reranker's on the user's Redis state and the bundle's activity, and the API
follows the event log, so new events move the movie activity the reranker reads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from stream_harness import create_topics, new_name, rating_event, wait_for
from test_serving import dataset_user, ids, seed, settings_for

from adapters.redis_store import UserStateStore
from devstack import DevStack
from recsys_core.activity import ACTIVITY_ARRAYS, MovieActivity
from recsys_core.dataset import Dataset
from recsys_core.rerank import CANDIDATES, Trees, rerank
from recsys_core.scoring import BlendWeights, blend, component_scores, standardized, top_k
from recsys_core.userstate import history_from_pairs
from serving.app import create_app
from serving.settings import ServingSettings
from training.evaluation.live import LiveReplay
from training.evaluation.splits import temporal_split
from training.pipeline import TrainParams, train_models
from training.registry import ModelRegistry
from training.rerank import attach_trees, fit_trees

WEIGHTS = BlendWeights(sequence=1.0, stage=0.5, peers=0.5)


@pytest.fixture(scope="module")
def rerank_model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    """ml-100k's oldest 98% with trees fitted on the next 1,000 events' logged cases."""
    train, rest = temporal_split(ml100k.interactions, 0.98)
    bundle = train_models(ml100k, TrainParams(), WEIGHTS, interactions=train).bundle
    live = LiveReplay(ml100k, TrainParams(), WEIGHTS, train, retrain_every=0,
                      rerank_every=0, bundle=bundle)
    columns = list(train.columns)
    for row in rest.iloc[:1000].itertuples(index=False, name=None):
        live.step(row, columns)
    x, y = live.cases.arrays()
    attach_trees(bundle, fit_trees(x, y, iterations=30), len(live.cases))
    root = tmp_path_factory.mktemp("rerank-models")
    ModelRegistry(root).publish(bundle)
    return root


@pytest.fixture(scope="module")
def api(devstack: DevStack, rerank_model_dir: Path) -> Iterator[TestClient]:
    settings = settings_for(devstack, rerank_model_dir, new_name("rr"))
    create_topics(settings)
    with TestClient(create_app(settings)) as client:
        yield client


def test_answers_are_the_core_rerankers_on_the_users_redis_state(
        api: TestClient, ml100k: Dataset) -> None:
    settings: ServingSettings = api.app.state.settings  # type: ignore[attr-defined]
    bundle = ModelRegistry(settings.model_dir).load()
    trees = Trees.from_bundle(bundle)
    assert trees is not None
    user = new_name("u")
    seed(api, dataset_user(ml100k, "13", user)[:60])
    body = api.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys)
    snap = store.read([user], bundle.item_factors.shape[1])[0]
    history, _ = history_from_pairs(snap.pairs, bundle, api.app.state.service.holder
                                    .require().rule)
    comps = component_scores(bundle, history, WEIGHTS)
    total = blend(comps, WEIGHTS)[0]
    cand, _ = top_k(total, CANDIDATES, history.item_idx)
    # the seeded events are older than the model's data: the activity is the bundle's
    activity = MovieActivity.from_arrays(bundle.movies,
                                         *(bundle.extra[n] for n in ACTIVITY_ARRAYS))
    idx, _ = rerank(trees, bundle, standardized(comps), total, cand, history, activity)
    expected = [bundle.movies.raw(int(i)) for i in idx[:10]]
    assert ids(body) == expected
    # the reranker changed the blend's order for this user
    assert expected != [bundle.movies.raw(int(i)) for i in cand[:10]]
    assert all(it["reason"] for it in body["items"])


def test_the_api_follows_the_event_log_into_the_movie_activity(api: TestClient) -> None:
    service = api.app.state.service  # type: ignore[attr-defined]
    bundle = service.holder.require().bundle
    activity = service.activity.for_bundle(bundle)
    end = float(bundle.manifest["data_window"]["to_timestamp"])
    pos = activity.positions_of(["50"])
    user = new_name("u")
    seed(api, [rating_event(f"{user}-a", user, "50", 5.0, end + 3600),
               rating_event(f"{user}-b", user, "181", 4.0, end + 3700)])
    wait_for(lambda: service.activity.for_bundle(bundle).now == end + 3700, 10,
             "the followed events")
    _, day_after, week_after = activity.features(pos)
    assert day_after[0] >= 1 and week_after[0] >= 1
    # every entry of the log is counted as followed (older ones too, added to nothing)
    settings: ServingSettings = api.app.state.settings  # type: ignore[attr-defined]
    entries = UserStateStore.from_url(settings.redis_url, keys=settings.keys).r.xlen(
        settings.keys.event_log())
    followed = [line for line in api.get("/metrics").text.splitlines()
                if line.startswith("recsys_api_activity_followed_total ")]
    assert followed and float(followed[0].split()[1]) >= entries
    started = time.monotonic()
    r = api.get(f"/v1/users/{user}/recommendations", params={"k": 5})
    assert r.status_code == 200 and len(r.json()["items"]) == 5
    assert time.monotonic() - started < 5


def test_answers_after_new_events_use_the_followed_activity(
        api: TestClient, ml100k: Dataset) -> None:
    """Events newer than the model: the API's answer equals the core reranker's with the
    bundle's activity plus those events, once the API has read them."""
    service = api.app.state.service  # type: ignore[attr-defined]
    settings: ServingSettings = api.app.state.settings  # type: ignore[attr-defined]
    bundle = ModelRegistry(settings.model_dir).load()
    trees = Trees.from_bundle(bundle)
    assert trees is not None
    end = float(bundle.manifest["data_window"]["to_timestamp"])
    _, rest = temporal_split(ml100k.interactions, 0.99)
    user = new_name("u")
    events = [rating_event(f"{user}-{n}", user if n % 3 == 0 else f"{user}-{n % 7}",
                           str(r.movie_id), float(r.rating), end + 60 * (n + 1))
              for n, r in enumerate(rest.iloc[:120].itertuples())]
    seed(api, events)
    wait_for(lambda: service.activity.for_bundle(bundle).now == end + 60 * 120, 10,
             "the followed events")
    body = api.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys)
    snap = store.read([user], bundle.item_factors.shape[1])[0]
    history, _ = history_from_pairs(snap.pairs, bundle, service.holder.require().rule)
    comps = component_scores(bundle, history, WEIGHTS)
    total = blend(comps, WEIGHTS)[0]
    cand, _ = top_k(total, CANDIDATES, history.item_idx)
    activity = MovieActivity.from_arrays(bundle.movies,
                                         *(bundle.extra[n] for n in ACTIVITY_ARRAYS))
    for e in events:
        activity.add(e["movie_id"], end + 60 * (events.index(e) + 1))
    idx, _ = rerank(trees, bundle, standardized(comps), total, cand, history, activity)
    assert ids(body) == [bundle.movies.raw(int(i)) for i in idx[:10]]
