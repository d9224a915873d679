"""The event log the trainer reads: the Redis stream of applied events, archived to Parquet.

Why this shape:

- The stream worker appends each event to the Redis stream ``Keys.event_log()`` in the same
  Lua script that dedupes it and merges it into the user's state. One script is atomic, so
  an event is in the log exactly when it changed the state: once, never for a duplicate,
  never for an event whose state update was lost. Kafka offsets alone cannot give that.
- :class:`EventLogArchiver` moves entries from the stream to Parquet files partitioned by
  event hour (``date=YYYY-MM-DD/hour=HH/<first-id>_<last-id>.parquet``): columnar, typed and
  compressed, so the trainer reads a time window without touching Redis. It reads with a
  consumer group, writes each file atomically (temp name, fsync, rename), and only then
  acks and deletes the entries in one transaction. A crash before the ack leaves the
  entries pending; the next run takes them first (its own with XREADGROUP 0, a dead
  archiver's with XAUTOCLAIM) as the same batch, so it rewrites the same file names.
- :func:`read_event_log` de-duplicates by ``event_id`` anyway, so even a batch cut
  differently after a crash never double-counts.

Stream entries have one field ``e``: ``b"<type> " + <the event's JSON as produced>``.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import redis
from prometheus_client import Counter

from recsys_core.errors import InvalidEvent
from recsys_core.events import RatingEvent, WatchEvent, parse_event
from recsys_core.keys import Keys

log = logging.getLogger(__name__)

ENTRIES = Counter("recsys_eventlog_entries_total",
                  "Event-log stream entries taken off the stream, by outcome", ["outcome"])

SCHEMA = pa.schema([
    ("event_id", pa.string()),
    ("type", pa.string()),
    ("user_id", pa.string()),
    ("movie_id", pa.string()),
    ("rating", pa.float32()),
    ("watched_seconds", pa.float64()),
    ("duration_seconds", pa.float64()),
    ("completion", pa.float64()),  # share watched (computed when only seconds were sent)
    ("occurred_at", pa.timestamp("us", tz="UTC")),
    ("stream_id", pa.string()),
])
LOG_COLUMNS = ("user_id", "movie_id", "rating", "timestamp", "completion", "event_id")
DEFAULT_GROUP = "archiver"

_Entry = tuple[bytes, dict[bytes, bytes] | None]


class EventLogArchiver:
    """Moves the event-log stream into hourly Parquet files under ``directory``."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        directory: Path | str,
        *,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        claim_idle_ms: int = 60_000,
    ) -> None:
        self.r = client
        self.stream = keys.event_log()
        self.directory = Path(directory)
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.claim_idle_ms = claim_idle_ms

    def archive_once(self, max_entries: int = 50_000) -> int:
        """Archive one batch of at most ``max_entries``: this consumer's pending entries, else
        a dead archiver's (idle ``claim_idle_ms``), else new ones. Returns the number of
        entries taken off the stream (0: nothing to do)."""
        self._ensure_group()
        entries = self._next_batch(max_entries)
        if not entries:
            return 0
        rows: list[dict[str, Any]] = []
        for stream_id, fields in entries:
            if not fields:  # deleted from the stream while pending: only ack it
                continue
            row = _row(stream_id.decode(), fields)
            if row is not None:
                rows.append(row)
        written = self._write(rows)
        ids = [stream_id for stream_id, _ in entries]
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.execute()
        ENTRIES.labels("archived").inc(len(rows))
        log.info("archived %d events of %d entries into %d files", len(rows), len(ids),
                 len(written))
        return len(ids)

    def archive_all(self, max_entries: int = 50_000) -> int:
        """Call :meth:`archive_once` until the stream has nothing left; the total."""
        total = 0
        while (n := self.archive_once(max_entries)) > 0:
            total += n
        return total

    def _ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _next_batch(self, count: int) -> list[_Entry]:
        own: Any = self.r.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count)
        if own and own[0][1]:
            return list(own[0][1])
        claimed: Any = self.r.xautoclaim(self.stream, self.group, self.consumer,
                                    self.claim_idle_ms, start_id="0-0", count=count)
        taken = [entry for entry in claimed[1] if entry[0] is not None]
        gone = [(stream_id, None) for stream_id in (claimed[2] if len(claimed) > 2 else [])]
        if taken or gone:  # gone: deleted while pending (Redis 7), acked without a row
            return sorted([*taken, *gone], key=lambda e: _stream_order(e[0]))
        new: Any = self.r.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count)
        return list(new[0][1]) if new else []

    def _write(self, rows: list[dict[str, Any]]) -> list[Path]:
        by_hour: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in rows:
            at: datetime = row["occurred_at"]
            by_hour.setdefault((at.strftime("%Y-%m-%d"), at.strftime("%H")), []).append(row)
        written = []
        for (day, hour), group in sorted(by_hour.items()):
            folder = self.directory / f"date={day}" / f"hour={hour}"
            name = f"{group[0]['stream_id']}_{group[-1]['stream_id']}.parquet"
            _write_atomically(pa.Table.from_pylist(group, schema=SCHEMA), folder / name)
            written.append(folder / name)
        return written


def _row(stream_id: str, fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """One Parquet row, or None (logged and counted) for an entry that cannot be read."""
    kind, _, payload = fields.get(b"e", b"").partition(b" ")
    try:
        if kind not in (b"rating", b"watch"):
            raise InvalidEvent("unknown_type", f"entry type {kind[:20]!r}")
        event = parse_event("rating" if kind == b"rating" else "watch", payload)
    except InvalidEvent as exc:
        ENTRIES.labels("rejected").inc()
        log.warning("event log entry %s rejected: %s", stream_id, exc)
        return None
    row: dict[str, Any] = {"event_id": event.event_id, "type": kind.decode(),
                           "occurred_at": event.occurred_at, "stream_id": stream_id}
    if isinstance(event, RatingEvent):
        row.update(user_id=event.user_id, movie_id=event.movie_id, rating=event.rating)
    elif isinstance(event, WatchEvent):
        row.update(user_id=event.user_id, movie_id=event.movie_id,
                   watched_seconds=event.watched_seconds,
                   duration_seconds=event.duration_seconds, completion=event.watch_completion)
    return row


def _write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        pq.write_table(table, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stream_order(stream_id: bytes | str) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _hour_start(path: Path) -> datetime | None:
    try:
        day = path.parent.parent.name.removeprefix("date=")
        hour = path.parent.name.removeprefix("hour=")
        return datetime.strptime(f"{day} {hour}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    except ValueError:
        return None


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("since and until need a timezone")
    return int(moment.timestamp() * 1_000_000)


def read_event_log(
    directory: Path | str, since: datetime | None = None, until: datetime | None = None
) -> pd.DataFrame:
    """Archived events with ``since <= occurred_at < until``, as interactions: ``user_id``,
    ``movie_id``, ``rating`` (float32, NaN for watches), ``timestamp`` (int64 seconds),
    ``completion`` (NaN for ratings), ``event_id``; one row per event id (the first
    archived), in time order (stream order within a second)."""
    lo = _micros(since) if since is not None else None
    hi = _micros(until) if until is not None else None
    files: list[str] = []
    for path in sorted(Path(directory).glob("date=*/hour=*/*.parquet")):
        start = _hour_start(path)
        if start is None:
            continue
        first, last = _micros(start), _micros(start) + 3_600_000_000
        if (lo is not None and last <= lo) or (hi is not None and first >= hi):
            continue
        files.append(str(path))
    if not files:
        return _empty()
    table = pads.dataset(files, schema=SCHEMA, format="parquet").to_table()
    micros = table.column("occurred_at").cast(pa.int64()).to_numpy()
    parts = pc.split_pattern(table.column("stream_id"), "-")
    stream_ms = pc.cast(pc.list_element(parts, 0), pa.int64()).to_numpy()
    stream_seq = pc.cast(pc.list_element(parts, 1), pa.int64()).to_numpy()
    order = np.lexsort((stream_seq, stream_ms, micros))
    if lo is not None:
        order = order[micros[order] >= lo]
    if hi is not None:
        order = order[micros[order] < hi]
    frame = table.select(["user_id", "movie_id", "rating", "completion", "event_id"]).take(
        pa.array(order)).to_pandas()
    frame.insert(3, "timestamp", micros[order] // 1_000_000)
    frame = frame.drop_duplicates("event_id", keep="first").astype(
        {"rating": np.float32, "timestamp": np.int64, "completion": np.float64})
    result: pd.DataFrame = frame[list(LOG_COLUMNS)].reset_index(drop=True)
    return result


def _empty() -> pd.DataFrame:
    columns: dict[str, pd.Series] = {
        "user_id": pd.Series(dtype=object), "movie_id": pd.Series(dtype=object),
        "rating": pd.Series(dtype=np.float32), "timestamp": pd.Series(dtype=np.int64),
        "completion": pd.Series(dtype=np.float64), "event_id": pd.Series(dtype=object),
    }
    return pd.DataFrame(columns)
