"""Protocol A: what the API serves is what ``recsys eval -p topn`` evaluates.

The fast test publishes what the trainer's code makes of a protocol A split of a few ml-100k
users, seeds the users into a real Redis as the stack does, and asks a real API for every
test user's top-10 per surface: each must equal the in-process evaluation's, with scoring
capped at a history cap most of these users exceed and nothing the user rated recommended.
The slow one runs the served benchmark itself (the whole stack, as ``recsys up``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from stream_harness import create_topics, new_name

from adapters.redis_store import UserStateStore
from benchmarks.served_topn import compare, served_seed, subsample
from devstack import DevStack
from devstack.seed import seed_users
from recsys_core.dataset import Dataset
from recsys_core.loaders import resolve_dataset_dir
from recsys_core.surfaces import SURFACES
from serving.app import create_app
from serving.settings import ServingSettings
from training.evaluation.topn import TopnRun, topn_run
from training.pipeline import TrainParams
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration

#: well under most of these users' training histories: scoring reads the newest 30 only,
#: exclusion must still cover them all
CAP = 30


@pytest.fixture(scope="module")
def split(ml100k: Dataset) -> TopnRun:
    return topn_run(subsample(ml100k, 60), TrainParams(history_cap=CAP), seed=7)


@pytest.fixture(scope="module")
def api(devstack: DevStack, split: TopnRun, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[TestClient]:
    name = new_name("topn")
    model_dir = tmp_path_factory.mktemp("topn-models")
    ModelRegistry(model_dir).publish(split.models.bundle)
    settings = ServingSettings(kafka_bootstrap=devstack.kafka_bootstrap,
                               redis_url=devstack.redis_url, model_dir=model_dir,
                               key_prefix=name, topic_prefix=f"{name}.",
                               user_history_cap=CAP, api_cache_size=0)
    create_topics(settings)
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys, cap=CAP)
    seed_users(store, "ml-100k", split.train, model_dir)
    with TestClient(create_app(settings)) as client:
        yield client


def test_every_surface_serves_the_evaluated_top10_of_every_test_user(
    api: TestClient, split: TopnRun
) -> None:
    over_cap = sum(len(c.seen) > CAP for c in split.cases if c.seen is not None)
    assert over_cap > len(split.cases) // 2  # the cap is really exercised
    served = {}
    for surface in SURFACES:
        lists = []
        for user in split.users:
            r = api.get(f"/v1/users/{user}/recommendations",
                        params={"k": 10, "exclude_seen": "true", "surface": surface})
            assert r.status_code == 200, r.text
            assert r.json()["surface"] == surface
            lists.append([it["movie_id"] for it in r.json()["items"]])
        served[surface] = lists
    found = compare(split, served)
    for surface in SURFACES:
        row = found[surface]
        assert row["identical_users"] == 1.0, surface
        assert row["already_rated"] == 0, surface
        assert row["served"]["ndcg@10"] == pytest.approx(row["in_process"]["ndcg@10"])
    # the two surfaces answer different questions: their lists differ
    assert served["for_you"] != served["up_next"]


def test_the_default_surface_is_named_and_an_unknown_one_is_a_4xx(api: TestClient,
                                                                  split: TopnRun) -> None:
    user = split.users[0]
    plain = api.get(f"/v1/users/{user}/recommendations").json()
    assert plain["surface"] == split.models.bundle.manifest["default_surface"]
    r = api.get(f"/v1/users/{user}/recommendations", params={"surface": "trending"})
    assert r.status_code == 422
    assert set(r.json()) >= {"error", "detail"}


@pytest.mark.slow
def test_served_benchmark_on_the_whole_stack_agrees_with_the_evaluation(
    ml100k: Dataset, data_dir: Path, tmp_path: Path
) -> None:
    source = resolve_dataset_dir("ml-100k", data_dir).resolve()
    result = served_seed(subsample(ml100k, 120), source, 42, tmp_path)
    assert result["same_fitted_weights"]
    for surface, row in result["surfaces"].items():
        assert row["already_rated"] == 0, surface
        assert row["identical_users"] >= 0.95, surface
        assert abs(row["served"]["ndcg@10"] - row["in_process"]["ndcg@10"]) < 0.01, surface

