"""Events posted to the API, produced to Kafka and acknowledged by the broker before the API
answers 202. The producer is created on first use and recreated after a failure, so the API
starts (and reads keep working) while the broker is down; writes then fail fast with
:class:`BrokerUnavailable`."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence

from kafka.errors import KafkaError

from adapters.kafka import EventProducer
from adapters.settings import CommonSettings
from recsys_core.events import Event, EventType
from serving import metrics

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker did not take the events in time."""


class EventSender:
    def __init__(self, settings: CommonSettings, ack_timeout: float = 5.0,
                 open_seconds: float = 2.0) -> None:
        self.settings = settings
        self.ack_timeout = ack_timeout
        self.open_seconds = open_seconds
        self._producer: EventProducer | None = None
        self._lock = threading.Lock()
        self._down_until = 0.0

    def _get(self) -> EventProducer:
        with self._lock:
            if self._producer is None:
                if time.monotonic() < self._down_until:
                    raise BrokerUnavailable("the broker was unreachable moments ago")
                if not self.reachable():
                    exc = ConnectionError(f"no bootstrap server answers at "
                                          f"{self.settings.kafka_bootstrap}")
                    self._failed(exc)
                    raise BrokerUnavailable(str(exc))
                try:
                    self._producer = EventProducer(
                        self.settings, max_block_ms=int(self.ack_timeout * 1000),
                        request_timeout_ms=int(self.ack_timeout * 1000), retries=2,
                        linger_ms=1, client_id="recsys-api")
                except (KafkaError, OSError, ValueError) as exc:
                    self._failed(exc)
                    raise BrokerUnavailable(str(exc)) from exc
            return self._producer

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.open_seconds
        metrics.DEPENDENCY_ERRORS.labels("kafka").inc()
        log.warning("broker unavailable: %s", exc)

    def send(self, events: Sequence[tuple[EventType, Event]]) -> None:
        """Produce and wait for every ack; on any failure nothing is reported as accepted
        (events are idempotent by ``event_id``, so a client may safely retry the batch)."""
        producer = self._get()
        try:
            futures = [producer.send(kind, event) for kind, event in events]
            deadline = time.monotonic() + self.ack_timeout
            for f in futures:
                f.get(timeout=max(0.05, deadline - time.monotonic()))
        except (KafkaError, OSError) as exc:
            with self._lock:
                if self._producer is producer:
                    self._producer = None
                    self._failed(exc)
            producer.close(timeout=0)
            raise BrokerUnavailable(str(exc)) from exc

    def reachable(self, timeout: float = 0.5) -> bool:
        """Whether any bootstrap server accepts a TCP connection."""
        for server in self.settings.kafka_bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                              timeout=timeout):
                    return True
            except (OSError, ValueError):
                continue
        return False

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=2)

    def __repr__(self) -> str:
        return f"EventSender({self.settings.kafka_bootstrap!r})"
