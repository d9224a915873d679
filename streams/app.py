"""The Faust application: one agent per input topic, all in one consumer group.

Each agent takes batches (``stream.take_events``), hands them to :class:`StreamProcessor`
(synchronous Redis, milliseconds per batch; Faust's consumer thread keeps heartbeating),
sends dead letters, and records metrics. A batch that fails on Redis is retried with
backoff until Redis answers again: Faust acks every event it handed out, so an event is
never acked before it is applied (the dedupe in Redis makes the retry safe).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import faust
import redis
from faust.sensors.monitor import Monitor
from faust.types import EventT
from prometheus_client import start_http_server

from adapters.eventlog import EventLogArchiver
from adapters.redis_store import UserStateStore
from recsys_core.errors import RecsysError
from recsys_core.events import EventType
from streams import metrics
from streams.faust_tuning import deliver_fetches_whole, limit_fetch_wait, raw_schema
from streams.offload import ProcessOffload
from streams.processor import ModelView, Record, StreamProcessor
from streams.settings import StreamSettings
from training.registry import ModelRegistry

log = logging.getLogger(__name__)
KINDS: tuple[EventType, ...] = ("rating", "watch", "catalog")


class WorkerState:
    """Long-lived clients and the current model of one worker process."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.store = UserStateStore.from_url(
            settings.redis_url, keys=settings.keys, cap=settings.user_history_cap,
            dedupe_ttl_seconds=settings.dedupe_ttl_seconds,
        )
        self.registry = ModelRegistry(settings.model_dir)
        self.view: ModelView | None = None
        self.processor = StreamProcessor(self.store, lambda: self.view)
        self.offload = ProcessOffload(settings) if settings.stream_offload_processing else None
        self.last_offset: dict[tuple[str, int], int] = {}

    def report_lag(self, lag: dict[str, int]) -> None:
        """This worker's partitions' lag into the shared hash (kept 30 s after the last
        report, so partitions of a worker that stopped fade out)."""
        key = self.settings.keys.lag()
        pipe = self.store.r.pipeline(transaction=False)
        pipe.hset(key, mapping={**lag, "_updated_at": repr(time.time())})
        pipe.expire(key, 30)
        pipe.execute()

    def poll_model(self) -> bool:
        """Load the published version if it differs from the one in use; True if it did."""
        try:
            current = self.registry.current_version()
            if current is None or (self.view is not None and self.view.version == current):
                return False
            self.view = ModelView(self.registry.load(current))
        except RecsysError as exc:
            log.warning("model version not loaded: %s", exc)
            return False
        metrics.MODEL_VERSION.set(self.view.version)
        log.info("folding in with model version %d", self.view.version)
        return True

    def refold_active(self) -> None:
        """Refold recently active users for the version in use, by one worker of the group
        (a Redis lock per version); the others go on consuming."""
        view, hours = self.view, self.settings.stream_refold_window_hours
        if view is None or hours <= 0:
            return
        lock = self.settings.keys.refold_lock(view.version)
        if not self.store.r.set(lock, socket.gethostname(), nx=True, ex=3600):
            return
        started = time.perf_counter()
        seen, written = self.processor.refold_active(
            view, hours * 3600, stop=lambda: self.view is not view)
        metrics.REFOLDED.inc(written)
        log.info("refolded %d of %d users active in the last %.0f h for version %d in %.1f s",
                 written, seen, hours, view.version, time.perf_counter() - started)

    async def process(self, kind: EventType, records: list[Record]) -> Any:
        delay = 0.1
        while True:
            try:
                if self.offload is not None:
                    view = self.view
                    return await self.offload.process(kind, records,
                                                      view.version if view else None)
                # inline: Faust's consumer runs in its own thread and keeps heartbeating, and a
                # batch takes milliseconds; a thread hop per batch only adds GIL contention
                return self.processor.process(kind, records)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                metrics.REDIS_ERRORS.inc()
                log.warning("redis unavailable (%s); retrying the batch in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class QuietMonitor(Monitor):  # type: ignore[misc]
    """Faust's monitor without its per-event bookkeeping (hot path); what operators need is
    counted per batch in Prometheus."""

    def on_message_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_message_out(self, *args: Any, **kwargs: Any) -> None:
        return None


def create_app(settings: StreamSettings) -> faust.App:
    limit_fetch_wait(settings.stream_fetch_max_wait_ms)
    deliver_fetches_whole()
    app = faust.App(
        settings.stream_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        datadir=str(settings.stream_data_dir),
        topic_partitions=settings.stream_partitions,
        topic_replication_factor=1,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.stream_session_timeout,
        broker_heartbeat_interval=max(settings.stream_session_timeout / 5, 0.5),
        broker_rebalance_timeout=settings.stream_session_timeout,
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.stream_batch_size * 4,
        stream_buffer_maxsize=settings.stream_batch_size * 16,
        # Faust's default monitor keeps per-event statistics in Python; ours are in
        # Prometheus, counted per batch
        Monitor=QuietMonitor,
    )
    state = WorkerState(settings)
    app.recsys_state = state  # type: ignore[attr-defined]

    for kind in KINDS:
        topic = app.topic(settings.topic(kind), schema=raw_schema())
        dlq = app.topic(settings.dead_letter_topic(kind), key_serializer="raw",
                        value_serializer="raw")
        app.agent(topic, name=f"recsys-{kind}")(_agent(kind, dlq, state))

    refolds: set[asyncio.Task[None]] = set()

    async def _refold() -> None:
        try:
            await asyncio.to_thread(state.refold_active)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            log.warning("active users not refolded (lazily on their next request): %s", exc)

    def refold_in_background() -> None:
        task = asyncio.create_task(_refold())
        refolds.add(task)
        task.add_done_callback(refolds.discard)

    @app.task  # type: ignore[misc]
    async def _start() -> None:
        if settings.stream_metrics_port:
            start_http_server(settings.stream_metrics_port, addr="0.0.0.0")
        if state.poll_model():  # a version published while no worker ran is refolded too
            refold_in_background()
        if state.offload is not None:
            await state.offload.start()

    @app.timer(settings.stream_model_poll_seconds)  # type: ignore[misc]
    async def _poll_model() -> None:
        if await asyncio.to_thread(state.poll_model):
            refold_in_background()

    archiver = EventLogArchiver(state.store.r, settings.keys, settings.event_log_dir)

    @app.timer(settings.stream_archive_seconds)  # type: ignore[misc]
    async def _archive() -> None:
        try:
            await asyncio.to_thread(archiver.archive_all)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            log.warning("event log not archived this time: %s", exc)

    @app.timer(5.0)  # type: ignore[misc]
    async def _lag() -> None:
        consumer = app.consumer
        report: dict[str, int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            done = state.last_offset.get((tp.topic, tp.partition), -1)
            lag = max(0, high - done - 1)
            metrics.LAG.labels(tp.topic, str(tp.partition)).set(lag)
            report[f"{tp.topic}:{tp.partition}"] = lag
        if report:
            try:
                await asyncio.to_thread(state.report_lag, report)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("lag not reported to Redis: %s", exc)

    return app


def _agent(kind: EventType, dlq: faust.TopicT, state: WorkerState) -> Any:
    """Batches are applied one after the other, in order; while one is applied (in the helper
    process), the agent already takes the next. ``take_events`` acks a batch's events when it
    hands out the next batch, so each event's message holds one more reference until its own
    batch is applied: Faust marks an offset safe to commit only on the last ack."""
    settings = state.settings

    async def apply(events: list[EventT]) -> None:
        cancelled = False
        try:
            records = [Record(e.value, m.topic, m.partition, m.offset, e.key)
                       for e in events for m in (e.message,)]
            result = await state.process(kind, records)
            for letter in result.dead_letters:
                await dlq.send(key=letter.key, value=letter.value)
                metrics.DEAD_LETTERS.labels(kind, letter.reason).inc()
            for outcome, n in result.outcomes.items():
                if outcome == "served_event":
                    metrics.SERVED_EVENTS.labels(kind).inc(n)
                elif outcome == "served_hit":
                    metrics.SERVED_HITS.labels(kind).inc(n)
                else:
                    metrics.EVENTS.labels(kind, outcome).inc(n)
            metrics.VECTORS.inc(result.vectors_updated)
            metrics.BATCH_SECONDS.labels(kind).observe(result.seconds)
            metrics.BATCH_EVENTS.labels(kind).observe(len(records))
            newest: dict[tuple[str, int], int] = {}
            for r in records:  # in offset order within a partition
                newest[r.topic, r.partition] = r.offset
            for tp, offset in newest.items():
                if offset > state.last_offset.get(tp, -1):
                    state.last_offset[tp] = offset
        except asyncio.CancelledError:
            cancelled = True  # the worker stops: left unacked, delivered again after restart
            raise
        finally:
            if not cancelled:
                for e in events:
                    e.ack()  # the last reference (as take_events acks, even after an error)

    async def agent(stream: faust.StreamT) -> None:
        applying: asyncio.Task[None] | None = None
        try:
            async for batch in stream.take_events(settings.stream_batch_size,
                                                  within=settings.stream_batch_seconds):
                events = list(batch)
                for e in events:
                    e.message.incref()  # released by apply() once the batch is applied
                if applying is not None:
                    await applying  # the previous batch first: per-user order
                applying = asyncio.create_task(apply(events))
            if applying is not None:
                await applying
        finally:
            if applying is not None and not applying.done():
                applying.cancel()

    return agent
