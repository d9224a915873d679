"""The embedded development stack: a Kafka-protocol broker and a Redis on loopback ports.

Used by the integration tests (``tests/conftest.py``), the benchmarks and the
one-command demo::

    with DevStack() as stack:
        env = stack.env(os.environ)  # RECSYS_KAFKA_BOOTSTRAP, RECSYS_REDIS_URL
        subprocess.run([...], env=env)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from devstack.kafka_broker import KafkaBroker
from devstack.process import DevStackError, free_port
from devstack.redis_server import RedisServer
from devstack.service import DEFAULT_STARTUP_TIMEOUT

__all__ = [
    "KAFKA_BOOTSTRAP_ENV",
    "REDIS_URL_ENV",
    "DevStack",
    "DevStackError",
    "KafkaBroker",
    "RedisServer",
    "free_port",
]

logger = logging.getLogger(__name__)

KAFKA_BOOTSTRAP_ENV = "RECSYS_KAFKA_BOOTSTRAP"
REDIS_URL_ENV = "RECSYS_REDIS_URL"


class DevStack:
    """A broker and a Redis started together and stopped together.

    Components passed in are used as they are (started if needed); by default
    new ones are made, with their logs in ``log_dir`` (a temporary directory if
    ``None``).
    """

    def __init__(
        self,
        *,
        log_dir: Path | str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        kafka: KafkaBroker | None = None,
        redis: RedisServer | None = None,
    ) -> None:
        self.kafka = kafka or KafkaBroker(log_dir=log_dir, startup_timeout=startup_timeout)
        self.redis = redis or RedisServer(log_dir=log_dir, startup_timeout=startup_timeout)

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def is_running(self) -> bool:
        return self.kafka.is_running() and self.redis.is_running()

    def start(self) -> Self:
        """Start both components; if one fails, stop both and re-raise."""
        try:
            self.kafka.start()
            self.redis.start()
        except BaseException:
            self.stop()
            raise
        logger.info("devstack: kafka %s, redis %s", self.kafka_bootstrap, self.redis_url)
        return self

    def stop(self) -> None:
        """Stop both components. Idempotent."""
        try:
            self.redis.stop()
        finally:
            self.kafka.stop()

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default empty) plus ``RECSYS_KAFKA_BOOTSTRAP`` and ``RECSYS_REDIS_URL``."""
        return {
            **(base or {}),
            KAFKA_BOOTSTRAP_ENV: self.kafka_bootstrap,
            REDIS_URL_ENV: self.redis_url,
        }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
