"""The event log against a real Redis: stream → hourly Parquet → interactions, exactly once."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from adapters.eventlog import SCHEMA, EventLogArchiver, read_event_log
from devstack import RedisServer
from recsys_core.events import RatingEvent, WatchEvent
from recsys_core.keys import Keys

pytestmark = pytest.mark.integration

START = datetime(1998, 3, 1, 10, 15, tzinfo=UTC)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_server.url)
    yield conn
    conn.close()


@pytest.fixture
def keys(unique_name: str) -> Keys:
    return Keys(unique_name)


def _append(client: redis.Redis, keys: Keys, n_ratings: int = 30, n_watches: int = 10) -> None:
    """XADD events exactly as the stream's Lua script writes them: ``b"<type> " + json``."""
    for i in range(n_ratings):
        event = RatingEvent(event_id=f"r{i}", occurred_at=START + timedelta(minutes=7 * i),
                            user_id=f"u{i % 4}", movie_id=f"m{i}", rating=1 + (i % 9) / 2)
        client.xadd(keys.event_log(), {"e": b"rating " + event.to_json()})
    for i in range(n_watches):
        watch = WatchEvent(event_id=f"w{i}", occurred_at=START + timedelta(minutes=11 * i),
                           user_id=f"u{i % 4}", movie_id=f"m{i}", watched_seconds=60.0 * i,
                           duration_seconds=600.0)
        client.xadd(keys.event_log(), {"e": b"watch " + watch.to_json()})


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*.parquet"))


class CrashAfterWrite(EventLogArchiver):
    """Writes the files, then dies before the ack."""

    def _write(self, rows: list[dict[str, object]]) -> list[Path]:
        super()._write(rows)
        raise RuntimeError("crash between write and ack")


def test_archive_writes_hourly_parquet_read_back_with_the_right_types(
    client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    _append(client, keys)
    archiver = EventLogArchiver(client, keys, tmp_path)
    assert archiver.archive_once() == 40
    assert client.xlen(keys.event_log()) == 0
    assert archiver.archive_once() == 0

    files = _files(tmp_path)
    hours = {str(Path(f).parent) for f in files}
    assert "date=1998-03-01/hour=10" in hours and len(hours) == len(files) == 4
    assert all(re.fullmatch(r"\d+-\d+_\d+-\d+\.parquet", Path(f).name) for f in files)
    table = pq.read_table(tmp_path / files[0])
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.schema.field("occurred_at").type == pa.timestamp("us", tz="UTC")
    assert not list(tmp_path.rglob("*.tmp"))

    log = read_event_log(tmp_path)
    assert list(log.columns) == ["user_id", "movie_id", "rating", "timestamp", "completion",
                                 "event_id"]
    assert log.dtypes.to_dict() == {"user_id": object, "movie_id": object,
                                    "rating": np.float32, "timestamp": np.int64,
                                    "completion": np.float64, "event_id": object}
    assert len(log) == 40 and log["timestamp"].is_monotonic_increasing
    rating = log.set_index("event_id").loc["r3"]
    assert (rating.user_id, rating.movie_id, rating.rating) == ("u3", "m3", 2.5)
    assert rating.timestamp == int((START + timedelta(minutes=21)).timestamp())
    assert np.isnan(rating.completion)
    watch = log.set_index("event_id").loc["w5"]
    assert np.isnan(watch.rating) and watch.completion == pytest.approx(0.5)


def test_read_event_log_selects_a_time_window(
    client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    _append(client, keys)
    EventLogArchiver(client, keys, tmp_path).archive_once()
    since, until = START + timedelta(minutes=60), START + timedelta(minutes=120)
    window = read_event_log(tmp_path, since=since, until=until)
    everything = read_event_log(tmp_path)
    expected = everything[(everything["timestamp"] >= since.timestamp())
                          & (everything["timestamp"] < until.timestamp())]
    assert len(window) > 0
    assert list(window["event_id"]) == list(expected["event_id"])
    assert read_event_log(tmp_path / "missing").empty


@pytest.mark.parametrize("same_consumer", [True, False])
def test_crash_between_write_and_ack_rewrites_the_same_files_without_duplicates(
    client: redis.Redis, keys: Keys, tmp_path: Path, same_consumer: bool
) -> None:
    _append(client, keys)
    crashing = CrashAfterWrite(client, keys, tmp_path, consumer="first")
    with pytest.raises(RuntimeError):
        crashing.archive_once(max_entries=25)
    written = _files(tmp_path)
    assert written and client.xlen(keys.event_log()) == 40
    # the restarted archiver: same name reads its own pending entries; a new one claims them
    restarted = EventLogArchiver(client, keys, tmp_path, claim_idle_ms=0,
                                 consumer="first" if same_consumer else "second")
    assert restarted.archive_once(max_entries=25) == 25
    assert _files(tmp_path) == written
    assert restarted.archive_once(max_entries=25) == 15
    assert restarted.archive_once(max_entries=25) == 0
    assert client.xlen(keys.event_log()) == 0
    assert client.xpending(keys.event_log(), "archiver")["pending"] == 0
    log = read_event_log(tmp_path)
    assert len(log) == 40 and log["event_id"].is_unique


def test_pending_entries_of_a_live_archiver_are_not_claimed(
    client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    _append(client, keys, n_ratings=5, n_watches=0)
    with pytest.raises(RuntimeError):
        CrashAfterWrite(client, keys, tmp_path, consumer="busy").archive_once()
    assert EventLogArchiver(client, keys, tmp_path, consumer="other").archive_once() == 0
    assert client.xlen(keys.event_log()) == 5


def test_read_event_log_keeps_one_row_per_event_id(
    client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    _append(client, keys)
    EventLogArchiver(client, keys, tmp_path).archive_once()
    first = tmp_path / _files(tmp_path)[0]
    shutil.copy(first, first.with_name("0-0_0-1.parquet"))  # as if a batch were cut twice
    log = read_event_log(tmp_path)
    assert len(log) == 40 and log["event_id"].is_unique


def test_unreadable_entries_are_taken_off_the_stream_without_a_row(
    client: redis.Redis, keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _append(client, keys, n_ratings=3, n_watches=0)
    client.xadd(keys.event_log(), {"e": b"rating {not json"})
    client.xadd(keys.event_log(), {"e": b"catalog {}"})
    assert EventLogArchiver(client, keys, tmp_path).archive_once() == 5
    assert client.xlen(keys.event_log()) == 0
    assert len(read_event_log(tmp_path)) == 3
    assert sum("rejected" in r.getMessage() for r in caplog.records) == 2


def test_entries_deleted_while_pending_are_acked(
    client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    _append(client, keys, n_ratings=4, n_watches=0)
    with pytest.raises(RuntimeError):
        CrashAfterWrite(client, keys, tmp_path, consumer="first").archive_once()
    oldest = client.xrange(keys.event_log(), count=1)[0][0]
    client.xdel(keys.event_log(), oldest)
    restarted = EventLogArchiver(client, keys, tmp_path, consumer="first")
    assert restarted.archive_once() == 4
    assert client.xpending(keys.event_log(), "archiver")["pending"] == 0
    assert len(read_event_log(tmp_path)) == 4  # the crashed run's file still holds it
