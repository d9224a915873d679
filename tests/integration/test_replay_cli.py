"""``recsys replay`` and ``recsys produce`` against the devstack broker, and their errors."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from typer.testing import CliRunner

from devstack import KafkaBroker, free_port
from recsys_cli.main import app
from recsys_core.events import RatingEvent, parse_event

pytestmark = pytest.mark.integration

runner = CliRunner()
CONSUME_DEADLINE_S = 30.0


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    """Every record of ``topic`` from the start: until ``expected`` arrived (or the deadline),
    then one more second to catch extras. No consumer group, so no join delay."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=1000)
    try:
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} has no partitions"
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[Any] = []
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        extra_until = time.monotonic() + 1.0
        while time.monotonic() < extra_until:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_replay_limit_500_produces_exactly_500_rating_events(
    kafka_broker: KafkaBroker, unique_name: str, data_dir: Path
) -> None:
    prefix = f"{unique_name}."
    result = runner.invoke(app, ["replay", "--dataset", "ml-100k", "--data-dir", str(data_dir),
                                 "--limit", "500", "--kafka-bootstrap", kafka_broker.bootstrap,
                                 "--topic-prefix", prefix], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert re.search(r"events sent\s*│\s*500\b", result.output), result.output
    assert re.search(r"failures\s*│\s*0\b", result.output), result.output

    records = _consume_all(kafka_broker.bootstrap, f"{prefix}ratings.v1", 500)
    assert len(records) == 500
    events = [parse_event("rating", r.value) for r in records]
    assert all(isinstance(e, RatingEvent) for e in events)
    assert len({e.event_id for e in events}) == 500
    assert all(r.key == e.user_id.encode() for r, e in zip(records, events, strict=True))
    assert all(e.event_id.startswith("ml-100k:") for e in events)
    # per partition (one user's events stay on one partition) the order is time order
    by_partition: dict[int, list[float]] = {}
    for record, event in zip(records, events, strict=True):
        by_partition.setdefault(record.partition, []).append(event.timestamp)
    assert all(times == sorted(times) for times in by_partition.values())


def test_produce_rating_round_trip(kafka_broker: KafkaBroker, unique_name: str) -> None:
    prefix = f"{unique_name}."
    event_id = f"{unique_name}-ev"
    result = runner.invoke(app, ["produce", "rating", "--user", "42", "--movie", "50",
                                 "--rating", "4.5", "--event-id", event_id,
                                 "--at", "2024-05-01T12:00:00Z",
                                 "--kafka-bootstrap", kafka_broker.bootstrap,
                                 "--topic-prefix", prefix], terminal_width=200)
    assert result.exit_code == 0, result.output
    where = re.search(r"to (\S+) partition (\d+) offset (\d+)", result.output)
    assert where is not None, result.output
    assert where.group(1) == f"{prefix}ratings.v1"

    records = _consume_all(kafka_broker.bootstrap, f"{prefix}ratings.v1", 1)
    assert len(records) == 1
    record = records[0]
    assert (record.partition, record.offset) == (int(where.group(2)), int(where.group(3)))
    assert record.key == b"42"
    event = parse_event("rating", record.value)
    assert isinstance(event, RatingEvent)
    assert (event.event_id, event.user_id, event.movie_id, event.rating) == (
        event_id, "42", "50", 4.5)
    assert event.occurred_at.isoformat() == "2024-05-01T12:00:00+00:00"


@pytest.mark.parametrize(("argv", "message"), [
    (["rating", "--user", "1", "--movie", "2", "--rating", "7"], "less than or equal to 5"),
    (["watch", "--user", "1", "--movie", "2"], "completion"),
    (["watch", "--user", "1", "--movie", "2", "--completion", "1.5"], "completion"),
    (["rating", "--user", "1", "--movie", "2", "--rating", "4", "--at", "2024-01-01"],
     "timezone"),
    (["catalog", "--movie", "9", "--title", "X", "--year", "1500"], "year"),
])
def test_produce_rejects_invalid_input_with_one_red_line(
    kafka_broker: KafkaBroker, argv: list[str], message: str
) -> None:
    result = runner.invoke(app, ["produce", *argv, "--kafka-bootstrap",
                                 kafka_broker.bootstrap], terminal_width=200)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid "), result.output
    assert message in lines[0]


def _recsys(*argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "recsys_cli.main", *argv],
                          capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


@pytest.mark.parametrize("command", [
    ["replay", "--limit", "5"],
    ["produce", "rating", "--user", "1", "--movie", "2", "--rating", "4"],
])
def test_unreachable_broker_exits_1_quickly_without_traceback(
    command: list[str], data_dir: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    done, seconds = _recsys(*command, "--kafka-bootstrap", address,
                            *(["--data-dir", str(data_dir)] if command[0] == "replay" else []))
    assert done.returncode == 1, done.stderr
    assert f"cannot reach Kafka at {address}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert seconds < 15


def test_replay_unknown_dataset_exits_1_with_the_loaders_message(data_dir: Path) -> None:
    result = runner.invoke(app, ["replay", "--dataset", "no-such-data", "--data-dir",
                                 str(data_dir)], terminal_width=200)
    assert result.exit_code == 1
    assert "dataset 'no-such-data' not found" in result.output


@pytest.mark.parametrize(("argv", "message"), [
    (["--fraction", "0.5", "--from-time", "1998-01-01"], "not both"),
    (["--rate", "10", "--speedup", "2"], "not both"),
    (["--rate", "0"], "--rate must be > 0"),
    (["--from-time", "yesterday"], "ISO 8601"),
])
def test_replay_rejects_bad_options(argv: list[str], message: str, data_dir: Path) -> None:
    result = runner.invoke(app, ["replay", "--data-dir", str(data_dir), *argv],
                           terminal_width=200)
    assert result.exit_code == 1
    assert message in result.output
