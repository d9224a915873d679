"""``recsys state rebuild`` and the automatic rebuild (training.rebuild) against a real Redis:
a user rebuilt from the base dataset and the archived event log equals the same user as
seeding and the stream made them (history, recency, seen set, rev, vector, affinity);
a second rebuild changes nothing; a lost store is found and rebuilt by one process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from stream_harness import (
    encode,
    load_view,
    make_stack,
    new_name,
    rating_event,
    read_user,
    shared_model_dir,
    wait_for,
    watch_event,
)

from adapters.eventlog import EventLogArchiver
from adapters.redis_store import UserStateStore
from devstack import RedisServer
from devstack.seed import seed_users
from recsys_core.dataset import Dataset
from recsys_core.keys import Keys
from streams.processor import Record, StreamProcessor
from training.evaluation.splits import temporal_split
from training.rebuild import (
    RebuildBusy,
    RebuildSettings,
    RebuildWatch,
    is_built,
    rebuild_locked,
)

pytestmark = pytest.mark.integration

CAP = 60
FRACTION = 0.8


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis_server.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


def settings_for(redis_server: RedisServer, prefix: str, model_dir: Path, log_dir: Path,
                 data_dir: Path, **extra: Any) -> RebuildSettings:
    return RebuildSettings(redis_url=redis_server.url, key_prefix=prefix, model_dir=model_dir,
                           event_log_dir=log_dir, dataset="ml-100k", data_dir=data_dir,
                           train_base_fraction=FRACTION, user_history_cap=CAP, **extra)


def replay_events(ml100k: Dataset, users: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The replayed part's ratings of ``users`` plus watches, a re-rating and a rating that
    is not a half star, as (kind, event) in time order."""
    _, rest = temporal_split(ml100k.interactions, FRACTION)
    rows = rest[rest["user_id"].isin(users)]
    out: list[tuple[str, dict[str, Any]]] = [
        ("rating", rating_event(f"r-{r.Index}", str(r.user_id), str(r.movie_id),
                                float(r.rating), float(r.timestamp)))
        for r in rows.itertuples()]
    t = float(rest["timestamp"].max()) + 10
    for n, user in enumerate(users):
        out.append(("watch", watch_event(f"w-{user}", user, "50", t + n, completion=0.62)))
        out.append(("watch", watch_event(f"w2-{user}", user, "181", t + n + 0.25,
                                         watched=3000.0, duration=7000.0)))
        out.append(("rating", rating_event(f"x-{user}", user, "50", 3.7, t + n + 0.5)))
        out.append(("rating", rating_event(f"y-{user}", user, "100", 2.0, t + n + 0.75)))
    return out


def stream(store: UserStateStore, model_dir: Path,
           events: list[tuple[str, dict[str, Any]]]) -> None:
    view = load_view(model_dir)
    processor = StreamProcessor(store, lambda: view)
    for kind in ("rating", "watch"):
        mine = [e for k, e in events if k == kind]
        records = [Record(encode(e), f"{kind}s", 0, n) for n, e in enumerate(mine)]
        for start in range(0, len(records), 40):
            result = processor.process(kind, records[start:start + 40])  # type: ignore[arg-type]
            assert result.outcomes.get("applied") == len(records[start:start + 40])


def state_of(store: UserStateStore, user: str) -> dict[str, Any]:
    s = read_user(store.r, store.keys, user)
    dropped = {m.decode() for m in store.r.smembers(store.keys.dropped(user))}
    return {"history": s.history, "recent": s.recent, "rev": s.rev, "dropped": dropped,
            "vector": None if s.vector is None else s.vector.tolist(),
            "vector_version": s.vector_version, "vector_rev": s.vector_rev,
            "affinity": s.affinity}


@pytest.fixture(scope="module")
def streamed(client: redis.Redis, ml100k: Dataset, model_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Keys, Path, list[str]]:
    """The base seeded as ``recsys up`` does, then events streamed, the log archived."""
    keys = Keys(f"streamed-{os.getpid()}")
    store = UserStateStore(client, keys=keys, cap=CAP)
    counts = ml100k.interactions["user_id"].value_counts()
    users = [str(u) for u in counts.index[:4]] + [str(counts.index[-1])]
    base, _ = temporal_split(ml100k.interactions, FRACTION)
    seed_users(store, ml100k.name, base, model_dir)
    stream(store, model_dir, replay_events(ml100k, users))
    log_dir = tmp_path_factory.mktemp("eventlog")
    assert EventLogArchiver(client, keys, log_dir).archive_all() > 0
    return keys, log_dir, users


def test_a_rebuilt_user_equals_the_seeded_and_streamed_one(
        client: redis.Redis, redis_server: RedisServer, streamed: tuple[Keys, Path, list[str]],
        model_dir: Path, data_dir: Path, unique_name: str) -> None:
    keys, log_dir, users = streamed
    settings = settings_for(redis_server, unique_name, model_dir, log_dir, data_dir)
    store = UserStateStore(client, keys=settings.keys, cap=CAP)
    assert not is_built(store)
    result = rebuild_locked(store, settings)
    assert result is not None and is_built(store)
    assert result.base_events == 80_000 and result.applied == result.events
    assert client.exists(settings.keys.event_log()) == 0  # nothing appended to the log again
    original = UserStateStore(client, keys=keys, cap=CAP)
    for user in users:
        want, got = state_of(original, user), state_of(store, user)
        assert got == want, user
    heavy = state_of(store, users[0])
    assert len(heavy["history"]) == CAP and len(heavy["dropped"]) > 100
    assert "50" in heavy["history"] and heavy["vector"] is not None


def test_a_second_rebuild_changes_nothing_and_the_command_says_so(
        client: redis.Redis, redis_server: RedisServer, streamed: tuple[Keys, Path, list[str]],
        model_dir: Path, data_dir: Path, unique_name: str) -> None:
    _, log_dir, users = streamed
    settings = settings_for(redis_server, unique_name, model_dir, log_dir, data_dir)
    store = UserStateStore(client, keys=settings.keys, cap=CAP)
    rebuild_locked(store, settings)
    before = [state_of(store, u) for u in users]
    env = {**os.environ, "RECSYS_REDIS_URL": redis_server.url, "RECSYS_KEY_PREFIX": unique_name,
           "RECSYS_USER_HISTORY_CAP": str(CAP), "RECSYS_DATA_DIR": str(data_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "recsys_cli.main", "state", "rebuild", "-d", "ml-100k",
         "--train-fraction", str(FRACTION), "--event-log-dir", str(log_dir),
         "--model-dir", str(model_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "applied (others: already there)" in out.stdout
    assert [line for line in out.stdout.splitlines() if "applied" in line][0].split()[-2] == "0"
    assert [state_of(store, u) for u in users] == before
    again = subprocess.run(
        [sys.executable, "-m", "recsys_cli.main", "state", "rebuild", "--if-lost",
         "--model-dir", str(model_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr


def test_a_lost_store_is_rebuilt_by_the_watch_and_by_one_process_only(
        client: redis.Redis, redis_server: RedisServer, streamed: tuple[Keys, Path, list[str]],
        model_dir: Path, data_dir: Path, unique_name: str) -> None:
    keys, log_dir, users = streamed
    settings = settings_for(redis_server, unique_name, model_dir, log_dir, data_dir,
                            state_rebuild_auto=True)
    store = UserStateStore(client, keys=settings.keys, cap=CAP)
    watch = RebuildWatch(settings)
    client.set(settings.keys.rebuild_lock(), "elsewhere:1", ex=60)  # another process is on it
    with pytest.raises(RebuildBusy):
        rebuild_locked(store, settings)
    assert watch.check_once() is None and not is_built(store)
    client.delete(settings.keys.rebuild_lock())
    result = watch.check_once()
    assert result is not None and watch.rebuilds == 1 and is_built(store)
    assert state_of(store, users[1]) == state_of(UserStateStore(client, keys=keys, cap=CAP),
                                                 users[1])
    assert watch.check_once() is None  # built: nothing more to do
    assert client.exists(settings.keys.rebuild_lock()) == 0


@pytest.mark.slow
def test_a_worker_rebuilds_a_store_that_came_back_empty(
        devstack: Any, ml100k: Dataset, model_dir: Path, data_dir: Path,
        tmp_path: Path) -> None:
    """A real worker with RECSYS_STATE_REBUILD_AUTO: a fresh store is built at once, and
    built again after every key of it is gone (as after an empty Redis restart)."""
    name = new_name("rebuild")
    stack = make_stack(devstack, name, model_dir, tmp_path, STATE_REBUILD_AUTO="true",
                       STATE_REBUILD_CHECK_SECONDS="0.5", DATASET="ml-100k",
                       DATA_DIR=str(data_dir), TRAIN_BASE_FRACTION="0.02",
                       EVENT_LOG_DIR=str(tmp_path / "eventlog"),
                       USER_HISTORY_CAP=str(CAP))
    keys = Keys(name)
    store = UserStateStore(stack.client, keys=keys, cap=CAP)
    base, _ = temporal_split(ml100k.interactions, 0.02)
    user = str(base["user_id"].value_counts().index[0])
    rated = set(base.loc[base["user_id"] == user, "movie_id"].astype(str))
    try:
        worker = stack.start_worker("w1", tmp_path)
        wait_for(lambda: is_built(store), 120, "the fresh store built", [worker])
        first = state_of(store, user)
        assert set(first["history"]) | first["dropped"] == rated
        assert first["vector"] is not None
        for key in stack.client.scan_iter(f"{name}:*"):  # the store is lost
            stack.client.delete(key)
        assert not is_built(store)
        wait_for(lambda: is_built(store), 120, "the lost store rebuilt", [worker])
        assert state_of(store, user) == first
        assert "rebuilt" in worker.describe()
    finally:
        stack.stop_all()
