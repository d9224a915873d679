"""Changes to Faust's consumer, applied once per process before the app is created.

- :func:`limit_fetch_wait`: a short broker-side wait for fetches (freshness on the dev broker).
- :func:`follow_applied_offsets`: for the input topics, commits and start positions follow
  what is applied (:mod:`streams.offsets`), and a hole in the delivered offsets is read
  again instead of being acked as Faust does.
- :func:`deliver_fetches_whole`: Faust hands each fetched message to the topic conductor
  inside ``Service.wait_first(callback(message), suspend_flow.wait())``, which creates four
  tasks and an ``asyncio.wait`` per message: at 10,000 events/s that alone takes about a
  third of the worker's event loop. The replacement races each *fetch* (up to
  ``broker_max_poll_records`` messages, delivered in the same order, one at a time) against
  a flow suspension instead: a rebalance still interrupts delivery at once, messages of an
  old generation are still dropped by ``getmany`` and the stream, read offsets, gaps and
  commit-every are kept exactly as Faust keeps them.
"""

from __future__ import annotations

import asyncio
from typing import Any


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Cap how long a fetch may wait on the broker for new data.

    Faust fixes aiokafka's ``fetch_max_wait_ms`` at 1500 ms. Kafka answers a waiting fetch as
    soon as data arrives, but the embedded development broker waits out the full time, which
    would add up to 1.5 s between an event and its processing; a short wait keeps freshness in
    milliseconds on both, for a few more idle fetch requests.
    """
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "_recsys_patched", False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms
        return consumer

    create._recsys_patched = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
    """``faust.transport.consumer.Consumer._drain_messages`` with one flow race per fetch."""
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    sleep = asyncio.sleep
    yield_every = 100

    guard = getattr(self.app, "recsys_offsets", None)

    async def deliver(ait: Any) -> None:
        since_yield = 0
        async for tp, message in ait:
            since_yield += 1
            if since_yield > yield_every:
                await sleep(0)
                since_yield = 0
            offset = message.offset
            if guard is not None and guard.guarded(tp.topic):
                # every offset in order from the start position, none skipped, none twice
                key = (tp.topic, tp.partition)
                expected = guard.next_read.get(key)
                if expected is not None and offset != expected:
                    if offset < expected:
                        continue
                    accept, seek = guard.on_hole(key, offset, expected)
                    if seek:
                        await self.seek(tp, expected)
                    if not accept:
                        continue
                guard.delivered(key, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                set_read_offset(tp, offset)
                continue
            r_offset = get_read_offset(tp)
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                set_read_offset(tp, offset)
            else:
                self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key,
                             message.value)

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            # getmany may return at once many times in a row: let other tasks run
            await self.sleep(0)
            if not self.should_stop:
                await self.wait_first(deliver(ait), self.suspend_flow.wait())
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def deliver_fetches_whole() -> None:
    """Replace Faust's per-message flow race by one per fetch (see the module docstring)."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer._drain_messages, "_recsys_patched", False):
        return
    _drain_messages._recsys_patched = True  # type: ignore[attr-defined]
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]


async def _perform_seek(self: Any) -> None:  # pragma: no cover - Faust's method
    """``Consumer.perform_seek`` (on assignment, and when a fetch returns while the flow is
    stopped) with each input partition started at its applied mark + 1."""
    from faust.transport.consumer import ensure_TP

    committed = dict(await self.seek_to_committed())
    guard = getattr(self.app, "recsys_offsets", None)
    if guard is not None:
        tps = [tp for tp in self.assignment() if guard.guarded(tp.topic)]
        keys = [(tp.topic, tp.partition) for tp in tps]
        kafka = {(tp.topic, tp.partition): off for tp, off in committed.items()}
        start = await asyncio.to_thread(guard.start_positions, keys, kafka)
        for tp, key in zip(tps, keys, strict=True):
            offset = start[key]
            if offset is not None and offset != kafka.get(key):
                self.log.info("%s[%d]: starting at applied offset %d (committed %r)",
                              tp.topic, tp.partition, offset, kafka.get(key))
                await self._seek(tp, offset)
                committed[tp] = offset
        guard.assigned(start)
    self._read_offset.update({
        tp: offset if offset is not None and offset >= 0 else None
        for tp, offset in committed.items()
    })
    self._committed_offset.update({
        ensure_TP(tp): offset if offset else None
        for tp, offset in committed.items() if offset is not None
    })


async def _seek(self: Any, partition: Any, offset: int) -> None:  # pragma: no cover
    """``Consumer.seek``, also moving the guard's next read position."""
    await self._seek(partition, offset)
    self._read_offset[partition] = offset if offset else None
    guard = getattr(self.app, "recsys_offsets", None)
    if guard is not None and guard.guarded(partition.topic):
        guard.sought((partition.topic, partition.partition), offset)


def _filter_committable_offsets(self: Any, tps: Any) -> dict[Any, int]:
    """What to commit: Faust's acked offsets for other topics; for the input topics, each
    owned partition's applied mark + 1 and nothing else."""
    from faust.types import TP

    offsets: dict[Any, int] = _faust_filter(self, tps)
    guard = getattr(self.app, "recsys_offsets", None)
    if guard is None:
        return offsets
    offsets = {tp: o for tp, o in offsets.items() if not guard.guarded(tp.topic)}
    assignment = self.assignment()
    for (topic, partition), nxt in guard.commit_points().items():
        tp = TP(topic, partition)
        if tp in assignment and self._should_commit(tp, nxt):
            offsets[tp] = nxt
    return offsets


_faust_filter: Any = None


def follow_applied_offsets() -> None:
    """Commit, start from and read the input topics by the applied marks of
    ``app.recsys_offsets`` (a :class:`streams.offsets.AppliedOffsets`); apps without one
    keep Faust's behaviour."""
    global _faust_filter
    from faust.transport.consumer import Consumer

    if getattr(Consumer.perform_seek, "_recsys_patched", False):
        return
    _faust_filter = Consumer._filter_committable_offsets
    for name, fn in (("perform_seek", _perform_seek), ("seek", _seek),
                     ("_filter_committable_offsets", _filter_committable_offsets)):
        fn._recsys_patched = True  # type: ignore[attr-defined]
        setattr(Consumer, name, fn)


def raw_schema() -> Any:
    """A topic schema that hands the message's key and value bytes to the stream as they are,
    without Faust's codec registry (two registry look-ups and calls per message). Our agents
    decode and validate values themselves, a batch at a time."""
    import faust

    class RawSchema(faust.Schema):  # type: ignore[misc]
        def compile(self, app: Any, *, on_key_decode_error: Any = None,
                    on_value_decode_error: Any = None, default_propagate: bool = False
                    ) -> Any:
            create_event = app.create_event

            async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:
                return create_event(message.key, message.value, message.headers, message)

            return decode

    return RawSchema(key_serializer="raw", value_serializer="raw")
