"""The stream worker (``python -m streams``) against the real dev broker and Redis.

One worker serves the fast tests of this module (a group join costs seconds); each test
uses its own user ids and message keys, and counts only its own records. The slow tests
start their own workers: a SIGKILL in the middle of a replay, and two workers sharing a
consumer group. Expected states come from an in-process run of ``StreamProcessor``.
"""

from __future__ import annotations

import base64
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaAdminClient
from stream_harness import (
    SESSION_TIMEOUT_S,
    Message,
    Stack,
    WorkerProcess,
    assert_same_user_state,
    dead_letters,
    encode,
    event_log,
    expected_vector,
    keyed,
    make_stack,
    ml100k_events,
    new_name,
    produce,
    rating_event,
    read_topic,
    read_user,
    reference_run,
    shared_model_dir,
    watch_event,
)
from stream_harness import wait_for as harness_wait_for

from devstack import DevStack
from recsys_core.dataset import Dataset
from recsys_core.events import MAX_EVENT_BYTES
from recsys_core.keys import Keys

pytestmark = pytest.mark.integration

#: a worker's start: process start, Faust boot and the first group join (~half the session)
START_S = 60.0
#: after a member died without leaving, the next join waits about 1.5 sessions
REJOIN_S = 60.0 + 2 * SESSION_TIMEOUT_S
T0 = 1_600_000_000.0


def wait_for(condition: Callable[[], Any], timeout: float, what: str, stack: Stack,
             describe: Callable[[], str] | None = None) -> Any:
    """Poll until ``condition()`` is truthy; fail with the stack's worker logs."""
    return harness_wait_for(condition, timeout, what, stack.workers, describe)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


@pytest.fixture(scope="module")
def worker(devstack: DevStack, model_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker for the module's fast tests, started once."""
    scratch = tmp_path_factory.mktemp("stream-worker")
    stack = make_stack(devstack, new_name("stream-worker"), model_dir, scratch)
    try:
        stack.start_worker("module-worker", scratch)
        yield stack
    finally:
        stack.stop_all()
        stack.client.close()


@pytest.fixture(autouse=True)
def _show_worker_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, the tails of its workers' logs (pytest shows them on failure)."""
    stacks = [request.getfixturevalue(name) for name in ("worker", "stack")
              if name in request.fixturenames]
    yield
    for stack in stacks:
        sys.stdout.write(stack.logs())


def user_applied(stack: Stack, users: dict[str, int]) -> bool:
    """Every user has ``rev`` events applied and a vector computed at that rev."""
    for user, n in users.items():
        meta = stack.client.hmget(stack.keys.meta(user), "rev", "vector_rev")
        if meta[0] is None or int(meta[0]) < n or meta[1] is None or int(meta[1]) < n:
            return False
    return True


def revs(stack: Stack, users: Sequence[str]) -> dict[str, tuple[int | None, int | None]]:
    out = {}
    for user in users:
        rev, vrev = stack.client.hmget(stack.keys.meta(user), "rev", "vector_rev")
        out[user] = (None if rev is None else int(rev), None if vrev is None else int(vrev))
    return out


def outcome_totals(worker: WorkerProcess, kind: str) -> Counter[str]:
    return Counter({o: worker.events_total(kind, o)
                    for o in ("applied", "duplicate", "invalid", "unknown_movie")})


# ---------------------------------------------------------------- one module worker


def test_worker_folds_in_new_users_ratings_and_watches(
    worker: Stack, ml100k: Dataset, unique_name: str
) -> None:
    ratings: dict[str, dict[str, float]] = {}
    events = []
    for raw in ("10", "21", "42"):
        user = f"{unique_name}-u{raw}"
        df = ml100k.interactions[ml100k.interactions["user_id"] == raw].head(40)
        for row in df.itertuples():
            events.append(rating_event(f"{user}-{row.Index}", user, str(row.movie_id),
                                       float(row.rating), float(row.timestamp)))
            ratings.setdefault(user, {})[str(row.movie_id)] = float(row.rating)
    watcher = f"{unique_name}-watcher"
    watches = [watch_event(f"{watcher}-w{m}", watcher, str(m), T0 + m, completion=0.2 * m)
               for m in range(1, 6)]
    watches.append(watch_event(f"{watcher}-w6", watcher, "6", T0 + 6, watched=10, duration=20))

    produce(worker.bootstrap, worker.topic("rating"), keyed(events))
    produce(worker.bootstrap, worker.topic("watch"), keyed(watches))

    expected_revs = {u: len(r) for u, r in ratings.items()} | {watcher: len(watches)}
    wait_for(lambda: user_applied(worker, expected_revs), START_S, "users' vectors", worker,
             lambda: str(revs(worker, list(expected_revs))))
    for user, movies in ratings.items():
        state = read_user(worker.client, worker.keys, user)
        assert state.rev == state.vector_rev == len(movies)
        assert state.vector_version == worker.view.version
        assert set(state.history) == set(movies)
        np.testing.assert_allclose(state.vector, expected_vector(worker.view, movies),  # type: ignore[arg-type]
                                   atol=1e-5, rtol=0, err_msg=user)
    state = read_user(worker.client, worker.keys, watcher)
    completions = {str(m): 0.2 * m for m in range(1, 6)} | {"6": 0.5}
    assert {m: float(v.split("|")[2]) for m, v in state.history.items()} == pytest.approx(
        completions)
    np.testing.assert_allclose(state.vector, expected_vector(worker.view, {}, completions),  # type: ignore[arg-type]
                               atol=1e-5, rtol=0)


def test_worker_dead_letters_exactly_the_invalid_events_and_applies_valid_ones_once(
    worker: Stack, unique_name: str
) -> None:
    w = worker.workers[0]
    before = outcome_totals(w, "rating")
    users = [f"{unique_name}-v{n}" for n in range(4)]
    valid = [rating_event(f"{unique_name}-e{n}", users[n % 4], str(1 + n), 1.0 + n % 5,
                          T0 + n) for n in range(60)]
    base = rating_event(f"{unique_name}-bad", users[0], "1", 4.0, T0)
    bad_values: list[tuple[bytes | None, str]] = [
        (b'{"event_id": "x", "user_id": ', "malformed_json"),
        (b"\xff\xfe\xfd", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b"42", "not_an_object"),
        (encode({k: v for k, v in base.items() if k != "movie_id"}), "missing_field"),
        (encode({**base, "rating": "five"}), "wrong_type"),
        (encode({**base, "rating": 7}), "out_of_range"),
        (encode({**base, "occurred_at": "2100-06-01T00:00:00Z"}), "out_of_range"),
        (encode({**base, "padding": "y" * MAX_EVENT_BYTES}), "oversized"),
        (None, "empty"),
    ]
    bad = [Message(f"{unique_name}-bad-{n}".encode(), v) for n, (v, _) in enumerate(bad_values)]
    good = keyed(valid)
    # the valid events in order, every 4th sent twice more (a producer retry resends the
    # same bytes), an invalid one after every 6th
    stream: list[Message] = []
    for n, msg in enumerate(good):
        stream.append(msg)
        if n % 4 == 3:
            stream.append(good[n - 3])
        if n % 6 == 5:
            stream.append(bad[(n // 6) % len(bad)])
    n_dups = len(stream) - len(good) - len(bad)
    assert n_dups == 15 and sum(m in bad for m in stream) == len(bad)
    produce(worker.bootstrap, worker.topic("rating"), stream)

    per_user = Counter(str(e["user_id"]) for e in valid)
    wait_for(lambda: user_applied(worker, dict(per_user)), START_S, "valid events applied",
             worker, lambda: str(revs(worker, users)))
    expected = {"applied": len(valid), "duplicate": n_dups, "invalid": len(bad)}

    def delta() -> Counter[str]:
        now = outcome_totals(w, "rating")
        return Counter({k: int(now[k] - before[k]) for k in expected})

    wait_for(lambda: delta() == Counter(expected), 30, "the worker's outcome counts", worker,
             lambda: f"{dict(delta())} != {expected}")

    ours = {m.key: m.value for m in bad}

    def our_letters() -> list[dict[str, Any]] | None:
        """This test's dead letters (read to the topic's end), once all have arrived."""
        letters = dead_letters(worker.bootstrap, worker.settings.dead_letter_topic("rating"), 0)
        mine = [d for d in letters if d["_key"].startswith(unique_name.encode())]
        return mine if len(mine) >= len(bad) else None

    letters = wait_for(our_letters, 30, "dead letters", worker)
    assert len(letters) == len(bad)
    assert Counter(d["reason"] for d in letters) == Counter(r for _, r in bad_values)
    for d in letters:
        assert d["topic"] == worker.topic("rating")
        assert 0 <= d["partition"] < 4 and d["offset"] >= 0
        assert base64.b64decode(d["raw_base64"]) == (ours[d["_key"]] or b"")
    assert len({(d["partition"], d["offset"]) for d in letters}) == len(letters)

    for user in users:
        state = read_user(worker.client, worker.keys, user)
        mine = [e for e in valid if e["user_id"] == user]
        assert state.rev == state.vector_rev == len(mine), user
        assert set(state.history) == {str(e["movie_id"]) for e in mine}
    logged = Counter(str(e["event_id"]) for _, e in event_log(worker.client, worker.keys)
                     if str(e.get("user_id", "")).startswith(unique_name))
    assert logged == Counter(str(e["event_id"]) for e in valid)


# ---------------------------------------------------------------- own workers (slow)


@pytest.fixture
def stack(devstack: DevStack, model_dir: Path, tmp_path: Path,
          unique_name: str) -> Iterator[Stack]:
    """Topics, keys and group of this test only; the test starts the workers.

    Ten events a batch makes a replay of a few thousand events last seconds, long enough
    to kill a worker in the middle of it or to share it between two workers. The event log
    stays in Redis (no archiving) because the tests count its entries.
    """
    s = make_stack(devstack, unique_name, model_dir, tmp_path, STREAM_BATCH_SIZE="10",
                   STREAM_ARCHIVE_SECONDS="3600")
    try:
        yield s
    finally:
        s.stop_all()
        s.client.close()


def committed(admin: KafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of ``topic`` (partition → next offset to read)."""
    if hasattr(admin, "list_group_offsets"):  # kafka-python 3
        offsets = admin.list_group_offsets(group).get(group, {})
    else:  # kafka-python 2
        offsets = admin.list_consumer_group_offsets(group)
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def end_offsets(stack: Stack, n_events: int) -> dict[int, int]:
    """partition → last offset + 1, from reading the topic back (ListOffsets is wrong on
    the dev broker after batched sends)."""
    records = read_topic(stack.bootstrap, stack.topic("rating"), n_events, timeout=60)
    assert len(records) == n_events
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends


def wait_until_consumed(stack: Stack, ends: dict[int, int], timeout: float) -> None:
    """The group has committed every partition's end (every event processed and acked)."""
    topic, group = stack.topic("rating"), stack.env["RECSYS_STREAM_APP_ID"]
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap, client_id="harness-offsets")
    try:
        wait_for(lambda: all(committed(admin, group, topic).get(p, -1) >= n
                             for p, n in ends.items()),
                 timeout, "the group to commit every offset", stack,
                 lambda: f"committed {committed(admin, group, topic)}, ends {ends}")
    finally:
        admin.close()


def assert_matches_reference(stack: Stack, events: Sequence[dict[str, Any]]) -> None:
    """The worker's state equals an in-process run over the same events, each once."""
    ref_prefix = f"{stack.keys.prefix}-reference"
    reference_run(stack.client, stack.view, ref_prefix,
                  [("rating", [encode(e) for e in events[i:i + 500]])
                   for i in range(0, len(events), 500)])
    ref_keys = Keys(ref_prefix)
    per_user = Counter(str(e["user_id"]) for e in events)
    for user, n in sorted(per_user.items()):
        actual = read_user(stack.client, stack.keys, user)
        assert actual.rev == n, f"{user}: rev {actual.rev}, {n} distinct events"
        movies = {e["movie_id"] for e in events if e["user_id"] == user}
        assert len(actual.history) == len(movies), user
        assert_same_user_state(actual, read_user(stack.client, ref_keys, user), user)
    log = event_log(stack.client, stack.keys)
    assert len(log) == len(events)
    assert Counter(str(e["event_id"]) for _, e in log) == Counter(
        str(e["event_id"]) for e in events)


def wait_all_applied(stack: Stack, events: Sequence[dict[str, Any]], timeout: float) -> None:
    log_key = stack.keys.event_log()
    wait_for(lambda: stack.client.xlen(log_key) >= len(events), timeout,
             f"{len(events)} events applied", stack,
             lambda: f"{stack.client.xlen(log_key)} applied")


@pytest.mark.slow
def test_sigkill_mid_replay_applies_every_event_exactly_once(
    stack: Stack, ml100k: Dataset, tmp_path: Path
) -> None:
    events = ml100k_events(ml100k, 5000)
    produce(stack.bootstrap, stack.topic("rating"), keyed(events))
    ends = end_offsets(stack, len(events))
    assert len(ends) == 4
    log_key = stack.keys.event_log()

    first = stack.start_worker("first", tmp_path)
    # poll tightly: the replay takes only a few seconds
    deadline = time.monotonic() + START_S
    while stack.client.xlen(log_key) < len(events) // 3:
        assert first.is_running(), stack.logs()
        assert time.monotonic() < deadline, f"no progress{stack.logs()}"
        time.sleep(0.002)
    first.kill()
    assert stack.client.xlen(log_key) < len(events), "the replay ended before the kill"

    second = stack.start_worker("second", tmp_path)
    wait_all_applied(stack, events, REJOIN_S + 60)
    wait_until_consumed(stack, ends, 60)
    users = Counter(str(e["user_id"]) for e in events)
    wait_for(lambda: user_applied(stack, dict(users)), 30, "every vector", stack)

    by_second = outcome_totals(second, "rating")
    by_first = len(events) - by_second["applied"]
    sys.stdout.write(f"applied before the kill {by_first}, after {dict(by_second)}\n")
    assert len(events) // 3 <= by_first < len(events)
    assert by_second["invalid"] == 0
    assert_matches_reference(stack, events)


@pytest.mark.slow
def test_two_workers_share_the_partitions_and_match_a_single_run(
    stack: Stack, ml100k: Dataset, tmp_path: Path
) -> None:
    events = ml100k_events(ml100k, 6000)
    workers = [stack.start_worker("a", tmp_path), stack.start_worker("b", tmp_path)]

    def applied() -> list[float]:
        return [w.events_total("rating", "applied") for w in workers]

    # produce in waves until both workers have applied some (the second may join later)
    sent = 0
    deadline = time.monotonic() + REJOIN_S + 60
    while sent < len(events) and not all(a > 0 for a in applied()):
        assert time.monotonic() < deadline, f"applied per worker {applied()}{stack.logs()}"
        wave = events[sent:sent + 250]
        produce(stack.bootstrap, stack.topic("rating"), keyed(wave))
        sent += len(wave)
        wait_all_applied(stack, events[:sent], REJOIN_S + 60)
    assert all(a > 0 for a in applied()), f"applied per worker {applied()}{stack.logs()}"
    if sent < len(events):
        produce(stack.bootstrap, stack.topic("rating"), keyed(events[sent:]))
    wait_all_applied(stack, events, 120)
    wait_until_consumed(stack, end_offsets(stack, len(events)), 60)
    users = Counter(str(e["user_id"]) for e in events)
    wait_for(lambda: user_applied(stack, dict(users)), 30, "every vector", stack)

    per_worker = applied()
    sys.stdout.write(f"applied per worker {per_worker}, sent in waves {sent}\n")
    assert all(a > 0 for a in per_worker) and sum(per_worker) == len(events)
    assert_matches_reference(stack, events)
