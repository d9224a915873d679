"""The replay core on ml-100k: order, slices, stable ids, valid events and pacing math."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from adapters.replay import (
    Pacer,
    rating_events,
    replay,
    replay_event_id,
    select_interactions,
)
from recsys_core.dataset import Dataset
from recsys_core.errors import InvalidEvent
from recsys_core.events import RatingEvent, parse_event
from training.evaluation.splits import temporal_split


class FakeClock:
    """A clock that only moves when someone sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _frame(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    return frame.astype({"rating": np.float32, "timestamp": np.int64})


def test_select_orders_by_time_and_keeps_input_order_within_equal_times() -> None:
    frame = _frame([("a", "1", 4, 5), ("b", "2", 3, 3), ("c", "3", 2, 5), ("d", "4", 1, 3)])
    assert list(select_interactions(frame)["user_id"]) == ["b", "d", "a", "c"]


def test_select_orders_all_of_ml100k_by_time(ml100k: Dataset) -> None:
    rows = select_interactions(ml100k.interactions)
    assert len(rows) == 100_000
    assert rows["timestamp"].is_monotonic_increasing
    assert list(rows.index) == list(range(100_000))


def test_fraction_replays_the_newest_share_like_protocol_c(ml100k: Dataset) -> None:
    rows = select_interactions(ml100k.interactions, fraction=0.8)
    train, replayed = temporal_split(ml100k.interactions, 0.8)
    assert len(rows) == 20_000
    assert rows["timestamp"].min() >= train["timestamp"].max()
    pd.testing.assert_frame_equal(rows, replayed.reset_index(drop=True))


def test_from_time_keeps_events_at_or_after_that_time(ml100k: Dataset) -> None:
    ordered = select_interactions(ml100k.interactions)
    cut = int(ordered["timestamp"].iloc[50_000])
    rows = select_interactions(ml100k.interactions,
                               from_time=datetime.fromtimestamp(cut, tz=UTC))
    assert rows["timestamp"].min() == cut
    assert len(rows) == int((ml100k.interactions["timestamp"] >= cut).sum())


def test_limit_takes_the_oldest_of_the_slice(ml100k: Dataset) -> None:
    rows = select_interactions(ml100k.interactions, fraction=0.5, limit=10)
    whole = select_interactions(ml100k.interactions, fraction=0.5)
    pd.testing.assert_frame_equal(rows, whole.iloc[:10])


@pytest.mark.parametrize("kwargs", [
    {"fraction": 0.5, "from_time": datetime(1998, 1, 1, tzinfo=UTC)},
    {"fraction": 1.5},
    {"from_time": datetime(1998, 1, 1)},
    {"limit": -1},
])
def test_select_rejects_bad_slices(ml100k: Dataset, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        select_interactions(ml100k.interactions, **kwargs)  # type: ignore[arg-type]


def test_event_ids_are_the_same_on_every_replay_and_unique(ml100k: Dataset) -> None:
    rows = select_interactions(ml100k.interactions, fraction=0.8)
    first = [e.event_id for e in rating_events(ml100k.name, rows)]
    second = [e.event_id for e in rating_events(ml100k.name, rows)]
    assert first == second
    assert len(set(first)) == len(first) == 20_000
    row = rows.iloc[0]
    assert first[0] == f"ml-100k:{row.user_id}:{row.movie_id}:{row.timestamp}"
    assert replay_event_id("my data", "1", "2", 3) == "my_data:1:2:3"


def test_events_are_keyed_fields_of_the_row_and_their_json_validates(ml100k: Dataset) -> None:
    rows = select_interactions(ml100k.interactions, limit=1000)
    events = list(rating_events(ml100k.name, rows))
    assert len(events) == 1000
    for event, row in zip(events, rows.itertuples(), strict=True):
        parsed = parse_event("rating", event.to_json())
        assert parsed == event
        assert isinstance(parsed, RatingEvent)
        assert (parsed.user_id, parsed.movie_id) == (row.user_id, row.movie_id)
        assert parsed.rating == pytest.approx(row.rating)
        assert parsed.timestamp == row.timestamp


def test_invalid_rows_go_to_on_invalid_or_raise() -> None:
    frame = _frame([("a", "1", 4, 900_000_000), ("b", "2", 9, 900_000_001),
                    ("c", "3", 3, 900_000_002)])
    seen: list[tuple[int, str]] = []
    events = list(rating_events("t", frame, lambda n, exc: seen.append((n, exc.reason))))
    assert [e.user_id for e in events] == ["a", "c"]
    assert seen == [(1, "out_of_range")]
    with pytest.raises(InvalidEvent):
        list(rating_events("t", frame))


def test_rate_spaces_events_evenly() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock, sleep=clock.sleep)
    sent = []
    for t in (0.0, 500.0, 500.0, 90_000.0):
        pacer.wait(t)
        sent.append(clock.now)
    assert np.diff(sent) == pytest.approx([0.1, 0.1, 0.1])


def test_speedup_divides_dataset_gaps_and_caps_long_ones() -> None:
    clock = FakeClock()
    pacer = Pacer(speedup=100, max_gap=2.0, clock=clock, sleep=clock.sleep)
    sent = []
    for t in (1000.0, 1100.0, 1100.0, 1150.0, 100_000.0):
        pacer.wait(t)
        sent.append(clock.now)
    assert np.diff(sent) == pytest.approx([1.0, 0.0, 0.5, 2.0])


def test_time_spent_sending_counts_towards_the_schedule() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock, sleep=clock.sleep)
    pacer.wait(0)
    clock.now += 0.03  # sending took 30 ms
    assert pacer.wait(1) == pytest.approx(0.07)


def test_a_pacer_far_behind_restarts_instead_of_bursting() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock, sleep=clock.sleep, max_lag=1.0)
    pacer.wait(0)
    clock.now += 5.0  # the broker stalled
    assert pacer.wait(1) == 0.0
    assert pacer.wait(2) == pytest.approx(0.1)


def test_no_pacing_never_sleeps() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    assert all(pacer.wait(t) == 0.0 for t in (0.0, 1e6, 2e6))
    assert clock.sleeps == []


@pytest.mark.parametrize("kwargs", [
    {"rate": 10, "speedup": 2}, {"rate": 0}, {"speedup": -1}, {"max_gap": -1},
])
def test_pacer_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Pacer(**kwargs)


def test_replay_sends_in_order_and_stops_when_asked(ml100k: Dataset) -> None:
    rows = select_interactions(ml100k.interactions, limit=10)
    events = list(rating_events(ml100k.name, rows))
    sent: list[RatingEvent] = []
    run = replay(events, sent.append, Pacer(), should_stop=lambda: len(sent) >= 4)
    assert sent == events[:4]
    assert run.stopped and run.submitted == 4
    assert (run.first_time, run.last_time) == (events[0].occurred_at, events[3].occurred_at)
    everything: list[RatingEvent] = []
    progress: list[int] = []
    run = replay(events, everything.append, Pacer(), progress=progress.append)
    assert everything == events and not run.stopped and progress == list(range(1, 11))
