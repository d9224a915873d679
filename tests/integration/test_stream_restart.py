"""A stream worker stopped and started again (``python -m streams``, real broker and Redis):
it resumes at the applied marks, so it neither re-sends dead letters nor reports its
partitions as lagging by their whole length, and its /healthz says it is consuming."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from stream_harness import (
    Message,
    Stack,
    WorkerProcess,
    dead_letters,
    keyed,
    make_stack,
    new_name,
    produce,
    rating_event,
    shared_model_dir,
    wait_for,
)

from devstack import DevStack
from recsys_core.dataset import Dataset
from streams.health import probe

pytestmark = pytest.mark.integration
START_S = 90.0
T0 = 1_600_000_000.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


@pytest.fixture
def stack(devstack: DevStack, model_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    s = make_stack(devstack, new_name("restart"), model_dir, tmp_path,
                   STREAM_ARCHIVE_SECONDS="3600")
    try:
        yield s
    finally:
        s.stop_all()
        s.client.close()


def lag_gauges(worker: WorkerProcess, topic: str) -> dict[str, float]:
    return {dict(labels)["partition"]: v for (name, labels), v in worker.metrics().items()
            if name == "recsys_stream_consumer_lag" and dict(labels).get("topic") == topic}


def test_a_restarted_worker_resumes_at_the_marks_without_resending_or_false_lag(
    stack: Stack, tmp_path: Path
) -> None:
    topic = stack.topic("rating")
    good = [rating_event(f"g{n}", f"user{n % 20}", str(1 + n), 4.0, T0 + n) for n in range(300)]
    bad = [Message(f"bad{n}".encode(), b'{"event_id": ') for n in range(12)]
    produce(stack.bootstrap, topic, keyed(good) + bad)

    first = stack.start_worker("first", tmp_path)
    log_key = stack.keys.event_log()
    wait_for(lambda: stack.client.xlen(log_key) >= len(good), START_S, "events applied",
             stack.workers)
    dlq = stack.settings.dead_letter_topic("rating")
    assert len(dead_letters(stack.bootstrap, dlq, len(bad))) == len(bad)
    wait_for(lambda: len(lag_gauges(first, topic)) == 4
             and not any(lag_gauges(first, topic).values()), 30, "lag 0", stack.workers)
    ok, body = probe(first.metrics_port)
    assert ok, body
    marks = stack.client.hgetall(stack.keys.applied_offsets())
    assert sorted(marks) == sorted(f"{topic}:{p}".encode() for p in range(4))

    first.stop()
    first.killed = True
    second = stack.start_worker("second", tmp_path)
    # reported once assigned, at the marks: no partition lags by its whole length
    wait_for(lambda: len(lag_gauges(second, topic)) == 4, START_S, "the second's gauges",
             stack.workers)
    assert not any(lag_gauges(second, topic).values()), lag_gauges(second, topic)
    assert json.loads(probe(second.metrics_port)[1])["status"] == "ok"
    # nothing delivered again: no event applied or counted twice, no letter re-sent
    one_more = rating_event("after", "user-after", "50", 5.0, T0)
    produce(stack.bootstrap, topic, keyed([one_more]))
    wait_for(lambda: stack.client.xlen(log_key) >= len(good) + 1, 60, "the next event",
             stack.workers)
    # counted once the batch's result is back in the worker, a moment after Redis has it
    wait_for(lambda: second.events_total("rating", "applied") >= 1, 10, "the count",
             stack.workers)
    assert second.events_total("rating", "applied") == 1
    assert second.events_total("rating", "redelivered") == 0
    assert second.events_total("rating", "invalid") == 0
    assert len(dead_letters(stack.bootstrap, dlq, len(bad))) == len(bad)
    assert stack.client.xlen(log_key) == len(good) + 1
