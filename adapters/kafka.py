"""Kafka with kafka-python: topic creation and the event producer used by the replay tool,
the command line and the API. Messages are keyed by user id (catalog: movie id)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from adapters.settings import CommonSettings
from recsys_core.events import CatalogEvent, Event, EventType

log = logging.getLogger(__name__)
KINDS: tuple[EventType, ...] = ("rating", "watch", "catalog", "follow")


def ensure_topics(settings: CommonSettings, partitions: int) -> list[str]:
    """Create the input topics (catalog compacted) and their dead-letter topics if missing."""
    wanted: list[NewTopic] = []
    for kind in KINDS:
        cfg = {"cleanup.policy": "compact"} if kind == "catalog" else {}
        wanted.append(NewTopic(settings.topic(kind), partitions, 1, topic_configs=cfg))
        wanted.append(NewTopic(settings.dead_letter_topic(kind), 1, 1))
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                             client_id="recsys-admin", request_timeout_ms=15000)
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created


def event_key(event: Event) -> bytes:
    return (event.movie_id if isinstance(event, CatalogEvent) else event.user_id).encode()


class EventProducer:
    """Sends validated events to their topics; ``flush`` waits for the broker's acks."""

    def __init__(self, settings: CommonSettings, **config: Any) -> None:
        self.settings = settings
        defaults: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap,
            "acks": "all",
            "linger_ms": 5,
            "retries": 5,
            "max_block_ms": 10_000,
            "client_id": "recsys-producer",
        }
        defaults.update(config)
        self._producer = KafkaProducer(**defaults)

    def send(self, kind: EventType, event: Event) -> Any:
        return self._producer.send(self.settings.topic(kind), key=event_key(event),
                                   value=event.to_json())

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> Any:
        return self._producer.send(topic, key=key, value=value)

    def send_all(self, kind: EventType, events: Iterable[Event]) -> int:
        n = 0
        for event in events:
            self.send(kind, event)
            n += 1
        return n

    def flush(self, timeout: float | None = 30.0) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 10) -> None:
        try:
            self._producer.close(timeout=timeout)
        except KafkaError as exc:  # closing must not hide the caller's own error
            log.warning("closing the producer: %s", exc)
            # kafka-python's close() stops at the failed flush and leaves its I/O thread
            # retrying forever; stop it (what close() would have done next)
            sender = getattr(self._producer, "_sender", None)
            if sender is not None and sender.is_alive():
                sender.force_close()
            self._producer._closed = True

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
