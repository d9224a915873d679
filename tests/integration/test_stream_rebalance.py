"""Two stream workers (``python -m streams``) in one group while one of them goes away.

An outside kafka-python producer sends events with unique ids at a steady rate; one worker
is stopped (SIGTERM) or killed (SIGKILL) in the middle, and restarted. Every event id must
be in the event log exactly once and every user's ``rev`` must equal the number of events
sent for that user: a committed offset past an unapplied event would lose a block, a
redelivery applied twice would double-count.

The default run has one graceful stop (about a minute with the group joins); the slow ones
have 20,000 events and several kill and stop cycles with the worker down 15 s.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from stream_harness import (
    SESSION_TIMEOUT_S,
    Stack,
    WorkerProcess,
    encode,
    event_log,
    make_stack,
    new_name,
    rating_event,
    shared_model_dir,
    wait_for,
)

from devstack import DevStack
from recsys_core.dataset import Dataset

pytestmark = pytest.mark.integration

START_S = 90.0
T0 = 1_600_000_000.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


@pytest.fixture
def stack(devstack: DevStack, model_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    """Small batches (the stream lasts seconds, long enough to rebalance in the middle of
    it); the event log stays in Redis (no archiving) because the test counts it."""
    s = make_stack(devstack, new_name("rebalance"), model_dir, tmp_path,
                   STREAM_ARCHIVE_SECONDS="3600")
    try:
        yield s
    finally:
        s.stop_all()
        s.client.close()


def unique_events(n: int, users: int, label: str) -> list[dict[str, Any]]:
    """``n`` valid ratings with unique ids over ``users`` users (movies 1..1682)."""
    return [rating_event(f"{label}-{i}", f"{label}-u{i % users}", str(1 + (i * 7) % 1682),
                         1.0 + i % 5, T0 + i) for i in range(n)]


class SteadyProducer(threading.Thread):
    """Sends events keyed by user at ``rate`` per second, as a platform would."""

    def __init__(self, bootstrap: str, topic: str, events: Sequence[dict[str, Any]],
                 rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.events, self.rate = bootstrap, topic, events, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                 retries=10, client_id="steady-producer")
        try:
            start = time.monotonic()
            futures = []
            for n, e in enumerate(self.events):
                ahead = n / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                futures.append(producer.send(self.topic, key=str(e["user_id"]).encode(),
                                             value=encode(e)))
                self.sent = n + 1
            producer.flush(timeout=60)
            for f in futures:
                f.get(timeout=30)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            producer.close(timeout=10)


def applied_counts(stack: Stack, label: str) -> Counter[str]:
    return Counter(str(e["event_id"]) for _, e in event_log(stack.client, stack.keys)
                   if str(e["event_id"]).startswith(label))


def assert_exactly_once(stack: Stack, events: Sequence[dict[str, Any]], label: str) -> None:
    """Every event id in the event log once, every user's rev = events sent for the user."""
    sent = {str(e["event_id"]) for e in events}
    counts = applied_counts(stack, label)
    lost = sorted(sent - set(counts))
    doubled = sorted(i for i, c in counts.items() if c > 1)
    assert not lost and not doubled, (
        f"{len(lost)} lost (first {lost[:5]}), {len(doubled)} applied twice "
        f"(first {doubled[:5]}) of {len(sent)}")
    per_user = Counter(str(e["user_id"]) for e in events)
    for user, n in per_user.items():
        rev = stack.client.hget(stack.keys.meta(user), "rev")
        assert rev is not None and int(rev) == n, f"{user}: rev {rev!r}, {n} events sent"


def applied_by(worker: WorkerProcess) -> float:
    return worker.events_total("rating", "applied")


def start_pair(stack: Stack, tmp_path: Path, warmup: Sequence[dict[str, Any]],
               label: str) -> list[WorkerProcess]:
    """Two workers; events of ``warmup`` are sent until both have applied some."""
    workers = [stack.start_worker("a", tmp_path), stack.start_worker("b", tmp_path)]
    producer = SteadyProducer(stack.bootstrap, stack.topic("rating"), warmup, rate=50)
    producer.start()
    wait_for(lambda: all(applied_by(w) > 0 for w in workers), START_S,
             "both workers applying", workers,
             lambda: f"applied {[applied_by(w) for w in workers]}, sent {producer.sent}")
    producer.join(timeout=120)
    assert producer.error is None, producer.error
    return workers


def run_with_faults(stack: Stack, tmp_path: Path, n_events: int, rate: float,
                    faults: Sequence[tuple[str, float]], label: str) -> None:
    """Warm up two workers, then send ``n_events`` at ``rate``; each fault (``kill`` or
    ``term``, down seconds) hits worker b while events flow, b restarts after its downtime.
    Then every event must be applied exactly once."""
    warmup = unique_events(400, 50, f"{label}w")
    events = unique_events(n_events, 400, label)
    workers = start_pair(stack, tmp_path, warmup, label)
    producer = SteadyProducer(stack.bootstrap, stack.topic("rating"), events, rate)
    producer.start()
    b = workers[1]
    for n, (how, down) in enumerate(faults):
        # the fault when a share of the stream has been applied
        share = (n + 1) / (len(faults) + 1)
        wait_for(lambda share=share: len(applied_counts(stack, label)) >= share * n_events,
                 120,
                 f"{share:.0%} of the events applied", stack.workers)
        sys.stdout.write(f"{how} b at {len(applied_counts(stack, label))} applied\n")
        if how == "kill":
            b.kill()
        else:
            b.stop()
            b.killed = True
        deadline = time.monotonic() + down
        while time.monotonic() < deadline and producer.is_alive():
            time.sleep(0.1)
        b = stack.start_worker(f"b{n + 1}", tmp_path)
    producer.join(timeout=300)
    assert producer.error is None, producer.error
    everything = [*warmup, *events]
    log_key = stack.keys.event_log()
    wait_for(lambda: stack.client.xlen(log_key) >= len(everything), 120 + 2 * START_S,
             "every event applied", stack.workers,
             lambda: f"{stack.client.xlen(log_key)} of {len(everything)} applied")
    assert_exactly_once(stack, warmup, f"{label}w")
    assert_exactly_once(stack, events, label)
    assert stack.client.xlen(log_key) == len(everything)


def test_sigkill_of_one_of_two_workers_mid_stream_loses_and_doubles_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    run_with_faults(stack, tmp_path, 8000, rate=1500, faults=[("kill", 2.0)], label="k1")


@pytest.mark.slow
def test_graceful_stop_of_one_of_two_workers_loses_and_doubles_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    run_with_faults(stack, tmp_path, 20_000, rate=1000, faults=[("term", 15.0)], label="t1")


@pytest.mark.slow
def test_two_sigkills_of_one_of_two_workers_lose_and_double_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    run_with_faults(stack, tmp_path, 20_000, rate=600,
                    faults=[("kill", 15.0), ("kill", 15.0)], label="k2")


@pytest.mark.slow
def test_sigkill_and_sigterm_cycles_with_20k_events_lose_and_double_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    run_with_faults(stack, tmp_path, 20_000, rate=500,
                    faults=[("kill", 15.0), ("term", 5.0), ("kill", 2 * SESSION_TIMEOUT_S)],
                    label="c3")
