"""Embedded development stack: Tansu (Kafka protocol) and Redis on free loopback ports."""

from devstack.launcher import (
    KAFKA_BOOTSTRAP_ENV,
    REDIS_URL_ENV,
    DevStack,
    DevStackError,
    KafkaBroker,
    RedisServer,
    free_port,
)

__all__ = [
    "KAFKA_BOOTSTRAP_ENV",
    "REDIS_URL_ENV",
    "DevStack",
    "DevStackError",
    "KafkaBroker",
    "RedisServer",
    "free_port",
]
