"""Seeding users' state from a dataset (``devstack.seed``) and ``UserStateStore.apply(log=False)``
on the real Redis of the session."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis
from stream_harness import (
    expected_vector,
    load_view,
    read_user,
    shared_model_dir,
)

from adapters.redis_store import Interaction, UserStateStore
from devstack import RedisServer
from devstack.seed import seed_interactions, seed_users
from recsys_core.dataset import Dataset
from recsys_core.keys import Keys
from recsys_core.userstate import PairState
from training.evaluation.splits import temporal_split

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis_server.client()
    yield c
    c.close()


def rating(event_id: str, user: str, movie: str, stars: float, ts: float) -> Interaction:
    return Interaction(event_id, user, movie, ts, stars, None, b"rating {}")


def test_apply_without_log_merges_and_dedupes_but_leaves_the_event_log_alone(
        client: redis.Redis, unique_name: str) -> None:
    keys = Keys(unique_name)
    store = UserStateStore(client, keys=keys)
    batch = [rating("e1", "u1", "m1", 4.0, 100.0), rating("e2", "u1", "m2", 3.0, 101.0),
             rating("e3", "u2", "m1", 5.0, 102.0)]

    assert [ok for ok, _ in store.apply(batch, log=False)] == [True, True, True]
    assert client.exists(keys.event_log()) == 0
    assert read_user(client, keys, "u1").rev == 2
    assert set(read_user(client, keys, "u1").history) == {"m1", "m2"}

    again = store.apply(batch, log=False)  # same event ids: duplicates, as in the stream
    assert [ok for ok, _ in again] == [False, False, False]
    assert read_user(client, keys, "u1").rev == 2

    store.apply([rating("e4", "u1", "m3", 2.0, 103.0)])  # the default still logs
    assert client.xlen(keys.event_log()) == 1


def test_seeded_histories_equal_the_dataset_pairs_and_nothing_is_logged(
        client: redis.Redis, unique_name: str, ml100k: Dataset) -> None:
    keys = Keys(unique_name)
    store = UserStateStore(client, keys=keys, cap=10_000)  # no cap: every pair is kept
    train, _ = temporal_split(ml100k.interactions, 0.8)

    applied, users = seed_interactions(store, ml100k.name, train, batch=7_000)

    assert applied == len(train)
    assert client.exists(keys.event_log()) == 0
    assert set(users) == set(train["user_id"])
    expected = {
        (str(u), str(m)): (float(r), float(t))
        for u, m, r, t in zip(train["user_id"], train["movie_id"], train["rating"],
                              train["timestamp"], strict=True)
    }
    seen: dict[tuple[str, str], tuple[float, float]] = {}
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hgetall(keys.history(user))
    for user, history in zip(users, pipe.execute(), strict=True):
        for movie, packed in history.items():
            state = PairState.unpack(packed)
            assert state.rating is not None and state.rating_at is not None
            seen[(user, movie.decode())] = (state.rating, state.rating_at)
    assert seen == expected
    revs = {u: read_user(client, keys, u).rev for u in users[:20]}
    counts = train["user_id"].value_counts()
    assert all(rev == counts[u] for u, rev in revs.items())


def test_seeding_the_same_rows_twice_applies_them_once(
        client: redis.Redis, unique_name: str, ml100k: Dataset) -> None:
    store = UserStateStore(client, keys=Keys(unique_name))
    rows = ml100k.interactions.head(500)

    first, _ = seed_interactions(store, ml100k.name, rows)
    second, _ = seed_interactions(store, ml100k.name, rows)

    assert (first, second) == (500, 0)


def test_seeded_users_get_the_fold_in_vector_of_the_current_model(
        client: redis.Redis, unique_name: str, ml100k: Dataset,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    model_dir = shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)
    view = load_view(model_dir)
    keys = Keys(unique_name)
    store = UserStateStore(client, keys=keys)
    rows = ml100k.interactions[ml100k.interactions["user_id"].isin(["1", "2", "3"])]

    result = seed_users(store, ml100k.name, rows, model_dir)

    assert (result.users, result.applied, result.vectors) == (3, len(rows), 3)
    assert client.exists(keys.event_log()) == 0
    assert client.hget(keys.state_built(), "by") == b"seed"  # a store that loses it is rebuilt
    for user in ("1", "2", "3"):
        state = read_user(client, keys, user)
        assert state.vector_version == view.version
        assert state.vector_rev == state.rev == (rows["user_id"] == user).sum()
        mine = rows[rows["user_id"] == user]
        want = expected_vector(view, dict(zip(mine["movie_id"], mine["rating"].astype(float),
                                              strict=True)))
        assert state.vector is not None
        np.testing.assert_allclose(state.vector, want, atol=1e-5, rtol=0)


def test_seeding_over_the_cap_keeps_every_movie_as_seen(
        client: redis.Redis, unique_name: str, ml100k: Dataset) -> None:
    """Heavy users are seeded with the cap: the history keeps the newest movies, the dropped
    set the rest, and together they are every movie the user rated."""
    keys = Keys(unique_name)
    store = UserStateStore(client, keys=keys, cap=50)
    counts = ml100k.interactions["user_id"].value_counts()
    heavy = [str(u) for u in counts.index[:5]]
    rows = ml100k.interactions[ml100k.interactions["user_id"].isin(heavy)]

    seed_interactions(store, ml100k.name, rows, batch=300)

    for user, snap in zip(heavy, store.read(heavy, 0, seen=True), strict=True):
        rated = set(rows.loc[rows["user_id"] == user, "movie_id"].astype(str))
        assert len(rated) > 200
        assert len(snap.table) == 50
        assert snap.dropped == rated - set(snap.table.movie_ids)
        assert set(snap.table.movie_ids) | snap.dropped == rated


def test_seeded_follows_fill_inboxes_from_the_seeded_histories_once(
        client: redis.Redis, ml100k: Dataset, unique_name: str) -> None:
    from adapters.follow_store import FollowStore
    from devstack.seed import seed_follows

    keys = Keys(unique_name)
    store = UserStateStore(client, keys=keys)
    rows = ml100k.interactions[ml100k.interactions["user_id"].isin(
        [str(u) for u in range(1, 101)])]
    seed_interactions(store, "ml-100k", rows)
    applied = seed_follows(store, "ml-100k", rows)
    assert applied >= 400  # ~8 follows each for 100 users
    assert seed_follows(store, "ml-100k", rows) == 0  # again: nothing changes
    follows = FollowStore(client, keys)
    mine, inbox = follows.read("1")
    assert mine and inbox  # a new follow brings the followee's newest movies
    assert {e.followee for e in inbox} <= set(mine)
    followee = inbox[0].followee
    assert "1" in follows.followers_of(followee)
    rated = set(rows.loc[rows["user_id"] == followee, "movie_id"].astype(str))
    assert {e.movie_id for e in inbox if e.followee == followee} <= rated
