"""Rebuild every user's state in Redis from the durable history, after Redis lost it.

The durable history is what the trainer reads: the base dataset (``RECSYS_DATASET``, its
oldest ``RECSYS_TRAIN_BASE_FRACTION``, exactly the rows ``recsys up`` seeds) and the
stream's Parquet event log (``RECSYS_EVENT_LOG_DIR``). Both go through
:meth:`UserStateStore.apply`, the stream's own Lua merge, cap and seen set, with the event
log left alone (those events are in it already); then each user's vector is folded in with
the current model as a stream worker does after a batch (:meth:`StreamProcessor.
refresh_vectors`). A rebuilt user therefore equals a streamed one.

Idempotent: each row carries a position in a fixed order (the base rows in time order, the
log in stream-entry order, which only grows at its end) as its source offset, so a row at
or below the user's mark for that source is skipped as delivered again (the stream's
per-partition marks); running a rebuild twice applies nothing the second time. Events the
stream applies meanwhile merge with the rebuilt state in any order.

Automatic: :class:`RebuildWatch` (started by a stream worker when ``RECSYS_STATE_REBUILD_AUTO``
is on) looks every few seconds for the :meth:`Keys.state_built` marker that seeding and a
rebuild write; when it is missing while a model version exists, the store was lost, and one
process, holding :meth:`Keys.rebuild_lock`, rebuilds it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pydantic import Field

from adapters.eventlog import SCHEMA
from adapters.redis_store import APPLIED, Interaction, UserStateStore
from adapters.replay import order_interactions, replay_event_id
from recsys_core.loaders import load_dataset
from streams.processor import ModelView, StreamProcessor
from training.evaluation.splits import temporal_split
from training.registry import ModelRegistry
from training.settings import TrainerSettings

log = logging.getLogger(__name__)

#: rows per pipeline round trip (one Lua call per user inside it)
APPLY_BATCH = 5_000
#: users per vector refresh (one read and one write round trip each)
VECTOR_BATCH = 500
#: source (topic) name of the event log's rows; the base rows' is ``base:<dataset>``
LOG_SOURCE = "eventlog"
#: the rebuild lock's lifetime; renewed while the rebuild makes progress
LOCK_SECONDS = 120

#: (phase, done, total): phase is "base", "log" or "vectors"
Progress = Callable[[str, int, int], None]


class RebuildSettings(TrainerSettings):
    state_rebuild_auto: bool = Field(
        False, description="A stream worker rebuilds the user state from the durable history "
        "when the store lost it (its built marker missing while a model exists)")
    state_rebuild_check_seconds: float = Field(
        10.0, gt=0, description="How often a worker looks for a lost store")


def base_source(dataset_name: str) -> str:
    return f"base:{dataset_name}"


@dataclass(frozen=True)
class RebuildResult:
    base_events: int
    log_events: int
    applied: int
    users: int
    vectors: int
    seconds: float

    @property
    def events(self) -> int:
        return self.base_events + self.log_events


def base_rows(settings: TrainerSettings) -> tuple[str, pd.DataFrame]:
    """The dataset's name and the base rows a trainer with ``settings`` trains on (and
    ``recsys up`` seeds), in time order."""
    base = load_dataset(settings.dataset, settings.data_dir)
    rows = base.interactions  # the cut of training.trainer.base_interactions
    if settings.train_base_fraction < 1.0:
        rows = temporal_split(rows, settings.train_base_fraction)[0]
    return base.name, order_interactions(rows)


def log_rows(directory: Path | str) -> pd.DataFrame:
    """The archived event log in stream-entry order (the order the stream applied it), one
    row per event id (the first): ``user_id``, ``movie_id``, ``rating`` (NaN for watches),
    ``completion`` (NaN for ratings), ``timestamp`` (float seconds, as the stream applied
    it), ``event_id``."""
    files = sorted(str(p) for p in Path(directory).glob("date=*/hour=*/*.parquet"))
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
            ("user_id", object), ("movie_id", object), ("rating", np.float64),
            ("completion", np.float64), ("timestamp", np.float64), ("event_id", object))})
    table = pads.dataset(files, schema=SCHEMA, format="parquet").to_table(
        columns=["event_id", "user_id", "movie_id", "rating", "completion", "occurred_at",
                 "stream_id"])
    parts = pc.split_pattern(table.column("stream_id"), "-")
    ms = pc.cast(pc.list_element(parts, 0), pa.int64()).to_numpy()
    seq = pc.cast(pc.list_element(parts, 1), pa.int64()).to_numpy()
    order = np.lexsort((seq, ms))
    micros = table.column("occurred_at").cast(pa.int64()).to_numpy()[order]
    frame = table.select(["user_id", "movie_id", "event_id"]).take(pa.array(order)).to_pandas()
    frame["rating"] = _exact_ratings(table.column("rating").to_numpy(zero_copy_only=False)
                                     [order])
    frame["completion"] = table.column("completion").to_numpy(zero_copy_only=False)[order]
    frame["timestamp"] = micros / 1e6  # as datetime.timestamp() gives it
    frame = frame[~frame["event_id"].duplicated(keep="first")]
    return frame.reset_index(drop=True)


def _exact_ratings(stored: np.ndarray) -> np.ndarray:
    """The ratings as sent: the log keeps them as float32, so a rating such as 3.7 comes
    back as 3.7000000476…; the shortest decimal that gives the same float32 is what the
    producer sent (half stars are exact as they are)."""
    out = stored.astype(np.float64)
    odd = np.isfinite(out) & (out * 2 != np.round(out * 2))
    if odd.any():
        out[odd] = [float(str(np.float32(v))) for v in stored[odd].tolist()]
    return out


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def apply_base(store: UserStateStore, dataset_name: str, rows: pd.DataFrame,
               progress: Progress | None = None, batch: int = APPLY_BATCH) -> int:
    """Apply the base rows (time order, as :func:`base_rows`) as ratings with the event ids
    ``recsys replay`` gives them, their positions as offsets of the base source, without
    the event log; how many were applied."""
    users = rows["user_id"].astype(str).to_numpy()
    movies = rows["movie_id"].astype(str).to_numpy()
    ratings = rows["rating"].to_numpy(dtype=float)
    stamps = rows["timestamp"].to_numpy(dtype="int64")
    source = base_source(dataset_name)
    applied = 0
    for part in _chunks(len(rows), batch):
        chunk = [Interaction(replay_event_id(dataset_name, u, m, int(t)), u, m, float(t),
                             float(r), None, b"", (source, 0, part.start + n))
                 for n, (u, m, r, t) in enumerate(zip(users[part], movies[part],
                                                      ratings[part], stamps[part],
                                                      strict=True))]
        applied += sum(flag == APPLIED for flag, _ in store.apply(chunk, log=False))
        if progress is not None:
            progress("base", part.stop, len(rows))
    return applied


def apply_log(store: UserStateStore, rows: pd.DataFrame, progress: Progress | None = None,
              batch: int = APPLY_BATCH) -> int:
    """Apply the event log's rows (stream order, as :func:`log_rows`), their positions as
    offsets of the log source, without appending them to the log again."""
    users = rows["user_id"].astype(str).to_numpy()
    movies = rows["movie_id"].astype(str).to_numpy()
    ids = rows["event_id"].astype(str).to_numpy()
    ratings = rows["rating"].to_numpy(dtype=float)
    completions = rows["completion"].to_numpy(dtype=float)
    stamps = rows["timestamp"].to_numpy(dtype=float)
    applied = 0
    for part in _chunks(len(rows), batch):
        chunk = [Interaction(e, u, m, float(t), None if r != r else float(r),
                             None if c != c else float(c), b"", (LOG_SOURCE, 0, part.start + n))
                 for n, (e, u, m, r, c, t) in enumerate(zip(
                     ids[part], users[part], movies[part], ratings[part], completions[part],
                     stamps[part], strict=True))]
        applied += sum(flag == APPLIED for flag, _ in store.apply(chunk, log=False))
        if progress is not None:
            progress("log", part.stop, len(rows))
    return applied


def refresh_vectors(store: UserStateStore, model_dir: Path, user_ids: list[str],
                    progress: Progress | None = None, batch: int = VECTOR_BATCH) -> int:
    """Fold each user's state into a vector of the current model version, as a stream
    worker does after a batch (current vectors are left alone); 0 without a model."""
    registry = ModelRegistry(model_dir)
    if registry.current_version() is None:
        return 0
    view = ModelView(registry.load())
    processor = StreamProcessor(store, lambda: view)
    written = 0
    for part in _chunks(len(user_ids), batch):
        written += processor.refresh_vectors(user_ids[part])
        if progress is not None:
            progress("vectors", part.stop, len(user_ids))
    return written


def mark_built(store: UserStateStore, by: str, events: int, users: int) -> None:
    """Write the marker that says the store holds every user's state."""
    store.r.hset(store.keys.state_built(), mapping={
        "by": by, "at": repr(time.time()), "events": events, "users": users})


def is_built(store: UserStateStore) -> bool:
    return bool(store.r.exists(store.keys.state_built()))


def rebuild_state(store: UserStateStore, settings: TrainerSettings,
                  progress: Progress | None = None) -> RebuildResult:
    """Every user's state from the base dataset and the event log, then their vectors, then
    the built marker."""
    started = time.perf_counter()
    name, base = base_rows(settings)
    events = log_rows(settings.event_log_dir)
    applied = apply_base(store, name, base, progress)
    applied += apply_log(store, events, progress)
    users = list(dict.fromkeys([*base["user_id"].astype(str).tolist(),
                                *events["user_id"].astype(str).tolist()]))
    vectors = refresh_vectors(store, settings.model_dir, users, progress)
    mark_built(store, "rebuild", len(base) + len(events), len(users))
    result = RebuildResult(len(base), len(events), applied, len(users), vectors,
                           time.perf_counter() - started)
    log.info("rebuilt %d users from %d base rows and %d logged events (%d applied), "
             "%d vectors, in %.1f s", result.users, result.base_events, result.log_events,
             result.applied, result.vectors, result.seconds)
    return result


class RebuildBusy(Exception):
    """Another process holds the rebuild lock."""


def rebuild_locked(store: UserStateStore, settings: TrainerSettings,
                   progress: Progress | None = None, only_if_lost: bool = False
                   ) -> RebuildResult | None:
    """:func:`rebuild_state` under the rebuild lock (renewed as the rebuild progresses);
    :class:`RebuildBusy` when another process holds it. With ``only_if_lost``, nothing is
    done (None) unless the built marker is missing while a model version exists."""
    lock, owner = store.keys.rebuild_lock(), f"{socket.gethostname()}:{os.getpid()}"
    if not store.r.set(lock, owner, nx=True, ex=LOCK_SECONDS):
        raise RebuildBusy(f"another process rebuilds the user state ({store.r.get(lock)!r})")
    renewed = [time.monotonic()]

    def renew(phase: str, done: int, total: int) -> None:
        if time.monotonic() - renewed[0] > LOCK_SECONDS / 4:
            store.r.expire(lock, LOCK_SECONDS)
            renewed[0] = time.monotonic()
        if progress is not None:
            progress(phase, done, total)

    try:
        if only_if_lost and (is_built(store)
                             or ModelRegistry(settings.model_dir).current_version() is None):
            return None
        return rebuild_state(store, settings, renew)
    finally:
        if store.r.get(lock) == owner.encode():
            store.r.delete(lock)


class RebuildWatch(threading.Thread):
    """Looks for a lost store every ``check_seconds`` and rebuilds it (one process of all
    that watch, by the lock); a daemon thread with its own Redis client."""

    def __init__(self, settings: RebuildSettings) -> None:
        super().__init__(name="state-rebuild-watch", daemon=True)
        self.settings = settings
        self.store = UserStateStore.from_url(settings.redis_url, keys=settings.keys,
                                             cap=settings.user_history_cap)
        self.stopped = threading.Event()
        self.rebuilds = 0

    def check_once(self) -> RebuildResult | None:
        if is_built(self.store) or self.store.r.exists(self.store.keys.rebuild_lock()):
            return None
        try:
            result = rebuild_locked(self.store, self.settings, only_if_lost=True)
        except RebuildBusy:
            return None
        if result is not None:
            self.rebuilds += 1
        return result

    def run(self) -> None:
        while not self.stopped.wait(self.settings.state_rebuild_check_seconds):
            try:
                if self.check_once() is None:
                    continue
            except Exception as exc:  # a lost Redis, a missing dataset: tried again later
                log.warning("user state not rebuilt this time: %s", exc)

    def stop(self) -> None:
        self.stopped.set()


def start_rebuild_watch() -> RebuildWatch | None:
    """The stream worker's hook: a started :class:`RebuildWatch` when
    ``RECSYS_STATE_REBUILD_AUTO`` is on (settings from the environment), else None."""
    settings = RebuildSettings()
    if not settings.state_rebuild_auto:
        return None
    watch = RebuildWatch(settings)
    watch.start()
    log.info("watching for a lost user state every %.0f s", settings.state_rebuild_check_seconds)
    return watch
