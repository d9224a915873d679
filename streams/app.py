"""The Faust application: one agent per input topic, all in one consumer group.

Each agent takes batches (``stream.take_events``) and applies them one after the other, in
order: the events not applied yet (:class:`streams.offsets.AppliedOffsets` sorts out
redeliveries and holes), then :class:`StreamProcessor` (synchronous Redis, milliseconds
per batch, in a helper process by default), then the batch's dead letters, each acked by
the broker, then the partitions' applied marks in Redis. Every step is retried with
backoff until it succeeds, whatever failed (Redis down, full or frozen, the broker, the
helper process); nothing is acked before that, and Kafka commits only applied marks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import faust
from faust.sensors.monitor import Monitor
from faust.types import TP, EventT

from adapters.eventlog import EventLogArchiver
from adapters.redis_store import UserStateStore
from recsys_core.errors import RecsysError
from recsys_core.events import EventType
from streams import metrics
from streams.faust_tuning import (
    deliver_fetches_whole,
    follow_applied_offsets,
    limit_fetch_wait,
    raw_schema,
)
from streams.health import TICK_SECONDS, WorkerHealth, serve
from streams.offload import ProcessOffload
from streams.offsets import AppliedOffsets, Split
from streams.processor import BatchResult, DeadLetter, ModelView, Record, StreamProcessor
from streams.settings import StreamSettings
from training.rebuild import start_rebuild_watch
from training.registry import ModelRegistry

log = logging.getLogger(__name__)
KINDS: tuple[EventType, ...] = ("rating", "watch", "catalog", "follow")
#: topics whose offsets follow the applied marks; the catalog is compacted (real holes) and
#: idempotent (upserts): Faust's own acks commit it
ORDERED_KINDS: tuple[EventType, ...] = ("rating", "watch", "follow")


class WorkerState:
    """Long-lived clients and the current model of one worker process."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.store = UserStateStore.from_url(
            settings.redis_url, keys=settings.keys, cap=settings.user_history_cap,
            dedupe_window=settings.stream_dedupe_window,
        )
        self.registry = ModelRegistry(settings.model_dir)
        self.view: ModelView | None = None
        self.processor = StreamProcessor(self.store, lambda: self.view)
        self.offload = ProcessOffload(settings) if settings.stream_offload_processing else None
        self.offsets = AppliedOffsets(self.store.r, settings.keys,
                                      [settings.topic(k) for k in ORDERED_KINDS])
        self.health = WorkerHealth(settings.stream_health_stall_seconds)
        #: partition → last offset handled, for every input topic (the lag)
        self.last_offset: dict[tuple[str, int], int] = {}
        self.reported: set[tuple[str, int]] = set()

    def report_lag(self, lag: dict[str, int], gone: list[str]) -> None:
        """This worker's partitions' lag into the shared hash (kept 30 s after the last
        report, so partitions of a worker that stopped fade out); ``gone``: partitions
        this worker no longer owns."""
        key = self.settings.keys.lag()
        pipe = self.store.r.pipeline(transaction=False)
        if gone:
            pipe.hdel(key, *gone)
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

    async def _process_once(self, kind: EventType, records: list[Record]) -> BatchResult:
        if self.offload is not None:
            view = self.view
            return await self.offload.process(kind, records, view.version if view else None)
        # inline: Faust's consumer runs in its own thread and keeps heartbeating, and a
        # batch takes milliseconds; a thread hop per batch only adds GIL contention
        return self.processor.process(kind, records)

    async def process(self, kind: EventType, records: list[Record]) -> BatchResult:
        """Apply the records, retried until it succeeds. A retry skips what an earlier try
        applied (the users' offset marks): those events count as applied, not redelivered."""
        tries = 0

        async def once() -> BatchResult:
            nonlocal tries
            tries += 1
            return await self._process_once(kind, records)

        result: BatchResult = await self.retry_step(kind, "process", once)
        if tries > 1 and "redelivered" in result.outcomes:
            result.count("applied", result.outcomes.pop("redelivered"))
        return result

    async def retry_step(self, kind: EventType, step: str, fn: Any, *args: Any) -> Any:
        """``await fn(*args)`` until it succeeds (backoff up to 5 s), whatever it raises."""
        delay = 0.1
        while True:
            try:
                out = fn(*args)
                return await out if asyncio.iscoroutine(out) else out
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure: the batch waits, nothing is acked
                metrics.BATCH_FAILURES.labels(kind, step).inc()
                if _is_redis(exc):
                    metrics.REDIS_ERRORS.inc()
                what = f"{step}: {type(exc).__name__}: {exc}"
                self.health.failing(what)
                log.warning("batch of %s not done (%s); retrying in %.1f s", kind, what, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _is_redis(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("redis")


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
    follow_applied_offsets()
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
    app.recsys_offsets = state.offsets  # type: ignore[attr-defined]  # faust_tuning reads it

    for kind in KINDS:
        topic = app.topic(settings.topic(kind), schema=raw_schema())
        dlq = app.topic(settings.dead_letter_topic(kind), key_serializer="raw",
                        value_serializer="raw")
        app.agent(topic, name=f"recsys-{kind}")(_agent(kind, dlq, app, state))

    refolds: set[asyncio.Task[None]] = set()

    async def _refold() -> None:
        try:
            await asyncio.to_thread(state.refold_active)
        except Exception as exc:  # a timer's work never ends the worker
            log.warning("active users not refolded (lazily on their next request): %s", exc)

    def refold_in_background() -> None:
        task = asyncio.create_task(_refold())
        refolds.add(task)
        task.add_done_callback(refolds.discard)

    @app.task  # type: ignore[misc]
    async def _start() -> None:
        if settings.stream_metrics_port:
            serve(settings.stream_metrics_port, state.health, settings.stream_metrics_host)
        if state.poll_model():  # a version published while no worker ran is refolded too
            refold_in_background()
        start_rebuild_watch()  # RECSYS_STATE_REBUILD_AUTO: rebuild a lost user state
        if state.offload is not None:
            await state.offload.start()

    @app.timer(settings.stream_model_poll_seconds)  # type: ignore[misc]
    async def _poll_model() -> None:
        try:
            if await asyncio.to_thread(state.poll_model):
                refold_in_background()
        except Exception as exc:
            log.warning("model version not polled: %s", exc)

    archiver = EventLogArchiver(state.store.r, settings.keys, settings.event_log_dir)

    @app.timer(settings.stream_archive_seconds)  # type: ignore[misc]
    async def _archive() -> None:
        try:
            await asyncio.to_thread(archiver.archive_all)
        except Exception as exc:
            log.warning("event log not archived this time: %s", exc)

    @app.on_partitions_revoked.connect  # type: ignore[misc]
    async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        state.offsets.revoked((tp.topic, tp.partition) for tp in revoked)

    @app.timer(TICK_SECONDS)  # type: ignore[misc]
    async def _lag() -> None:
        try:
            await report_lag(app, state)
        except Exception as exc:
            log.warning("lag not measured: %s", exc)

    return app


async def report_lag(app: faust.App, state: WorkerState) -> None:
    """Each owned partition's lag (its end − the next offset to apply) as a gauge and into
    Redis; gauges of partitions no longer owned are removed. A partition is reported once
    its start position is known, never as lagging by its whole length."""
    consumer = app.consumer
    report: dict[str, int] = {}
    owned: set[tuple[str, int]] = set()
    for tp in consumer.assignment():
        key = (tp.topic, tp.partition)
        owned.add(key)
        high = consumer.highwater(tp)
        done = state.offsets.applied.get(key, state.last_offset.get(key))
        if high == 0 and done is None:
            done = -1  # an empty partition: nothing to apply, lag 0
        if high is None or done is None:
            continue
        lag = max(0, high - done - 1)
        metrics.LAG.labels(tp.topic, str(tp.partition)).set(lag)
        report[f"{tp.topic}:{tp.partition}"] = lag
    gone = state.reported - owned
    for topic, partition in gone:
        try:
            metrics.LAG.remove(topic, str(partition))
        except KeyError:
            pass
    state.reported = owned
    state.health.tick(report)
    if report or gone:
        try:
            await asyncio.to_thread(state.report_lag, report,
                                    [f"{t}:{p}" for t, p in sorted(gone)])
        except Exception as exc:
            log.warning("lag not reported to Redis: %s", exc)


def _agent(kind: EventType, dlq: faust.TopicT, app: faust.App, state: WorkerState) -> Any:
    """Batches are applied one after the other, in order; while one is applied (in the helper
    process), the agent already takes the next. ``take_events`` acks a batch's events when it
    hands out the next batch, so each event's message holds one more reference until its own
    batch is applied (Faust waits for those on a rebalance)."""
    settings = state.settings
    ordered = state.offsets.guarded(settings.topic(kind))

    async def send_dead_letters(letters: list[DeadLetter], sent: set[int]) -> None:
        pending = [(n, letter, await dlq.send(key=letter.key, value=letter.value))
                   for n, letter in enumerate(letters) if n not in sent]
        for n, letter, fut in pending:
            await fut  # acked by the broker
            sent.add(n)
            metrics.DEAD_LETTERS.labels(kind, letter.reason).inc()

    async def seek_again(split: Split) -> None:
        assignment = app.consumer.assignment()
        for (topic, partition), offset in split.out_of_order.items():
            metrics.OFFSET_HOLES.labels(topic).inc()
            log.error("%s[%d]: a batch skipped past offset %d; reading again from there",
                      topic, partition, offset)
            tp = TP(topic, partition)
            if tp in assignment:
                await app.consumer.seek(tp, offset)

    async def apply(events: list[EventT]) -> None:
        records = [Record(e.value, m.topic, m.partition, m.offset, e.key)
                   for e in events for m in (e.message,)]
        if ordered:
            split = state.offsets.split(records)
        else:
            split = Split(records, 0, {}, {})
            for r in records:
                split.last[r.topic, r.partition] = r.offset
        if split.out_of_order:
            try:
                await seek_again(split)
            except Exception as exc:  # the partition's next owner starts from the mark
                log.warning("partition not sought back: %s", exc)
        if split.todo:
            result = await state.process(kind, split.todo)
            record_outcomes(kind, result, len(split.todo))
            sent: set[int] = set()
            await state.retry_step(kind, "dead_letters", send_dead_letters,
                                   result.dead_letters, sent)
            if ordered:
                await state.retry_step(kind, "applied_offsets", asyncio.to_thread,
                                       state.offsets.record, split.last)
                state.offsets.advance(split.last)
            state.health.applied()
        if split.redelivered:
            metrics.EVENTS.labels(kind, "redelivered").inc(split.redelivered)
        for tp, offset in split.last.items():
            if offset > state.last_offset.get(tp, -1):
                state.last_offset[tp] = offset
        for e in events:
            e.ack()  # the last reference: the batch is applied

    async def agent(stream: faust.StreamT) -> None:
        applying: asyncio.Task[None] | None = None
        try:
            async for batch in stream.take_events(settings.stream_batch_size,
                                                  within=settings.stream_batch_seconds):
                events = list(batch)
                for e in events:
                    e.message.incref()  # released by apply() once the batch is applied
                if applying is not None:
                    await asyncio.shield(applying)  # the previous batch first: per-user order
                applying = asyncio.create_task(apply(events))
            if applying is not None:
                await asyncio.shield(applying)
        finally:
            if applying is not None and not applying.done():
                # stopping: the batch in hand finishes and records its mark, within limits
                # (what is left undone is delivered again, and skipped where applied)
                done, _ = await asyncio.wait({applying},
                                             timeout=settings.stream_shutdown_wait_seconds)
                if not done:
                    log.warning("the batch in hand was not applied before shutdown")
                    applying.cancel()

    return agent


def record_outcomes(kind: EventType, result: BatchResult, n_records: int) -> None:
    """A batch's counts, once it is applied (before its dead letters are sent)."""
    for outcome, n in result.outcomes.items():
        if outcome == "served_event":
            metrics.SERVED_EVENTS.labels(kind).inc(n)
        elif outcome == "served_hit":
            metrics.SERVED_HITS.labels(kind).inc(n)
        else:
            metrics.EVENTS.labels(kind, outcome).inc(n)
    metrics.VECTORS.inc(result.vectors_updated)
    metrics.BATCH_SECONDS.labels(kind).observe(result.seconds)
    metrics.BATCH_EVENTS.labels(kind).observe(n_records)
