"""Batch processing in a helper process, so a worker uses two cores: while the helper
validates, merges in Redis and folds in one batch, Faust's event loop keeps fetching and
delivering the next events (its per-event work and ours no longer take turns on one GIL).

Order and delivery guarantees are those of inline processing: the agent still awaits each
batch before taking the next, and Faust acks a batch only after that.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from recsys_core.events import EventType
from streams.processor import BatchResult, ModelView, Record, StreamProcessor
from streams.settings import StreamSettings

log = logging.getLogger(__name__)

_helper: dict[str, Any] = {}


def _init(settings_json: str) -> None:
    """In the helper process: its own Redis client and model registry."""
    from threadpoolctl import threadpool_limits

    from adapters.redis_store import UserStateStore
    from training.registry import ModelRegistry

    threadpool_limits(1, "blas")
    settings = StreamSettings.model_validate_json(settings_json)
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys,
                                    cap=settings.user_history_cap,
                                    dedupe_window=settings.stream_dedupe_window)
    _helper.update(registry=ModelRegistry(settings.model_dir), view=None)
    _helper["processor"] = StreamProcessor(store, lambda: _helper["view"])


def _process(kind: EventType, records: list[Record], version: int | None) -> BatchResult:
    """One batch with the model version the worker uses (loaded here on first sight)."""
    view: ModelView | None = _helper["view"]
    if version is None:
        _helper["view"] = None
    elif view is None or view.version != version:
        _helper["view"] = ModelView(_helper["registry"].load(version))
    result: BatchResult = _helper["processor"].process(kind, records)
    return result


def _ready() -> bool:
    return "processor" in _helper


def _helper_pid() -> int:
    import os

    return os.getpid()


class ProcessOffload:
    def __init__(self, settings: StreamSettings) -> None:
        self.settings_json = settings.model_dump_json()
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init, initargs=(self.settings_json,))

    async def start(self) -> None:
        """Start the helper now rather than on the first batch."""
        await asyncio.get_running_loop().run_in_executor(self.pool, _ready)

    async def process(self, kind: EventType, records: list[Record],
                      version: int | None) -> BatchResult:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, _process, kind, records, version)
        except BrokenProcessPool:
            log.warning("the processing helper died; starting a new one and retrying")
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return await loop.run_in_executor(self.pool, _process, kind, records, version)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
