"""Shared fixtures: a real Kafka-protocol broker and a real Redis, started once per session.

They start lazily (only when a test asks for them) on free loopback ports and
stop at the end of the session; logs stay under pytest's basetemp.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

from devstack import DevStack, KafkaBroker, RedisServer
from recsys_core.dataset import Dataset
from recsys_core.loaders import load_dataset


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with KafkaBroker(log_dir=tmp_path_factory.mktemp("devstack-kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(log_dir=tmp_path_factory.mktemp("devstack-redis")) as server:
        yield server


@pytest.fixture(scope="session")
def devstack(kafka_broker: KafkaBroker, redis_server: RedisServer) -> DevStack:
    """Both servers; stopping is left to the two fixtures above."""
    return DevStack(kafka=kafka_broker, redis=redis_server)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A per-test prefix for topic names, group ids and Redis keys, e.g. ``test_x-1a2b3c4d``."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:40].strip("_")
    return f"{base}-{uuid.uuid4().hex[:8]}"


# small matrix solves everywhere: competing BLAS threads only slow the suite down
threadpool_limits(1, "blas")

DATA_DIR = Path(
    os.environ.get("RECSYS_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "ml-100k").is_dir():
        pytest.fail(f"MovieLens data not found under {DATA_DIR}; set RECSYS_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def ml100k(data_dir: Path) -> Dataset:
    return load_dataset("ml-100k", data_dir)
