"""StreamProcessor against a real Redis and a model trained on ml-100k (no broker).

The stored state is checked against an in-process computation: the fold-in of each user's
latest ratings and best completions with the model's confidence rule, and a second run of
the processor over the same events delivered in order, once, into another key prefix.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
import redis
from stream_harness import (
    UserState,
    assert_same_user_state,
    chunks,
    encode,
    event_log,
    expected_vector,
    load_view,
    rating_event,
    read_user,
    shared_model_dir,
    watch_event,
)

from adapters.redis_store import DEDUPE_WINDOW, UserStateStore
from devstack import RedisServer
from recsys_core.content import content_vector
from recsys_core.dataset import Dataset
from recsys_core.events import MAX_EVENT_BYTES, CatalogEvent, EventType
from recsys_core.keys import Keys
from recsys_core.userstate import PairState
from streams.processor import BatchResult, ModelView, Record, StreamProcessor

pytestmark = pytest.mark.integration

T0 = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
TOPIC = "ratings.v1"


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> ModelView:
    return load_view(shared_model_dir(tmp_path_factory.getbasetemp(), ml100k))


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis_server.client()
    yield c
    c.close()


class Harness:
    """One test's processor over its own key prefix."""

    def __init__(self, client: redis.Redis, view: ModelView, prefix: str, cap: int = 500,
                 dedupe_window: int = DEDUPE_WINDOW):
        self.client = client
        self.view = view
        self.keys = Keys(prefix)
        self.store = UserStateStore(client, keys=self.keys, cap=cap,
                                    dedupe_window=dedupe_window)
        self.processor = StreamProcessor(self.store, lambda: view)
        self._offset = 0

    def apply(self, kind: EventType, values: Sequence[bytes | None],
              key: bytes | None = None) -> BatchResult:
        records = []
        for v in values:
            records.append(Record(v, TOPIC, 0, self._offset, key))
            self._offset += 1
        return self.processor.process(kind, records)

    def user(self, user: str) -> UserState:
        return read_user(self.client, self.keys, user)

    def log(self) -> list[tuple[str, dict[str, object]]]:
        return event_log(self.client, self.keys)


@pytest.fixture
def harness(client: redis.Redis, view: ModelView, unique_name: str) -> Harness:
    return Harness(client, view, unique_name)


def ml100k_user_events(dataset: Dataset, raw_user: str, user: str) -> list[dict[str, object]]:
    """One ml-100k user's ratings in time order, as events of ``user``."""
    df = dataset.interactions[dataset.interactions["user_id"] == raw_user]
    df = df.sort_values(["timestamp", "movie_id"], kind="stable")
    return [
        rating_event(f"{user}-{row.Index}", user, str(row.movie_id), float(row.rating),
                     float(row.timestamp))
        for row in df.itertuples()
    ]


def latest_ratings(events: Sequence[dict[str, object]]) -> dict[str, float]:
    """movie → rating of the latest rating event (the greater rating on a tie)."""
    best: dict[str, tuple[str, float]] = {}
    for e in events:
        if "rating" not in e:
            continue
        movie, cand = str(e["movie_id"]), (str(e["occurred_at"]), float(e["rating"]))  # type: ignore[arg-type]
        if movie not in best or cand > best[movie]:
            best[movie] = cand
    return {m: r for m, (_, r) in best.items()}


# ---------------------------------------------------------------- fold-in


def test_stored_vector_equals_in_process_fold_in(harness: Harness, ml100k: Dataset) -> None:
    events = ml100k_user_events(ml100k, "1", "u1")
    assert len(events) == 272
    applied = 0
    for batch in chunks(events, 50):
        result = harness.apply("rating", [encode(e) for e in batch])
        applied += result.outcomes.get("applied", 0)
        assert result.vectors_updated == 1
    assert applied == len(events)

    state = harness.user("u1")
    assert state.rev == len(events)
    assert state.vector_rev == state.rev and state.vector_version == harness.view.version
    assert set(state.history) == {str(e["movie_id"]) for e in events}
    expected = expected_vector(harness.view, latest_ratings(events))
    assert state.vector is not None and state.vector.shape == (harness.view.factors,)
    np.testing.assert_allclose(state.vector, expected, atol=1e-5, rtol=0)
    assert state.affinity and max(state.affinity.values()) == 1.0


def test_duplicate_event_ids_change_nothing(harness: Harness, ml100k: Dataset) -> None:
    events = ml100k_user_events(ml100k, "2", "u2")
    values = [encode(e) for e in events]
    assert harness.apply("rating", values).outcomes == {"applied": len(events)}
    before, log_before = harness.user("u2"), harness.log()

    again = harness.apply("rating", values[::-1])
    assert again.outcomes == {"duplicate": len(events)}
    # same event ids, different content: still duplicates
    changed = [encode({**e, "rating": 0.5, "movie_id": "1"}) for e in events[:5]]
    assert harness.apply("rating", changed).outcomes == {"duplicate": 5}

    after = harness.user("u2")
    assert after.history == before.history and after.recent == before.recent
    assert after.rev == before.rev == len(events)
    assert after.vector is not None and before.vector is not None
    assert after.vector.tobytes() == before.vector.tobytes()
    assert harness.log() == log_before


def test_duplicates_within_one_batch_apply_once(harness: Harness) -> None:
    e = rating_event("dup-1", "u", "50", 4.0, T0)
    result = harness.apply("rating", [encode(e)] * 3)
    assert result.outcomes == {"applied": 1, "duplicate": 2}
    assert harness.user("u").rev == 1
    assert len(harness.log()) == 1


def test_shuffled_delivery_with_duplicates_gives_in_order_state(
    client: redis.Redis, view: ModelView, unique_name: str, ml100k: Dataset
) -> None:
    events: list[dict[str, object]] = []
    for raw in ("3", "4", "5", "6"):
        events += ml100k_user_events(ml100k, raw, f"s{raw}")
    rng = random.Random(7)
    # re-ratings and watches of rated movies, some later and some earlier than the rating
    for n, e in enumerate(rng.sample(events, 80)):
        ts = datetime.fromisoformat(str(e["occurred_at"])).timestamp()
        shift = rng.choice([-86400.0, 86400.0, 0.0])
        if n % 2:
            events.append(rating_event(f"rr-{n}", str(e["user_id"]), str(e["movie_id"]),
                                       rng.choice([0.5, 1.0, 2.5, 4.0, 5.0]), ts + shift))
        else:
            events.append(watch_event(f"w-{n}", str(e["user_id"]), str(e["movie_id"]),
                                      ts + shift, completion=round(rng.random(), 3)))
    events.sort(key=lambda e: (str(e["occurred_at"]), str(e["event_id"])))

    def kind_of(e: dict[str, object]) -> EventType:
        return "rating" if "rating" in e else "watch"

    in_order = Harness(client, view, f"{unique_name}-in-order")
    for batch in chunks(events, 37):
        for kind in ("rating", "watch"):
            part = [encode(e) for e in batch if kind_of(e) == kind]
            if part:
                in_order.apply(kind, part)

    # duplicates anywhere in the delivery: a dedupe window as long as a user's events
    shuffled = Harness(client, view, f"{unique_name}-shuffled", dedupe_window=1000)
    delivery = events + rng.sample(events, len(events) // 3)
    rng.shuffle(delivery)
    outcomes: dict[str, int] = {}
    pos = 0
    while pos < len(delivery):
        size = rng.randint(1, 60)
        batch, pos = delivery[pos:pos + size], pos + size
        for kind in ("rating", "watch"):
            part = [encode(e) for e in batch if kind_of(e) == kind]
            if part:
                for k, v in shuffled.apply(kind, part).outcomes.items():
                    outcomes[k] = outcomes.get(k, 0) + v
    assert outcomes == {"applied": len(events), "duplicate": len(delivery) - len(events)}

    for user in sorted({str(e["user_id"]) for e in events}):
        assert_same_user_state(shuffled.user(user), in_order.user(user), user)
    ids_in_order = sorted(str(e["event_id"]) for _, e in in_order.log())
    ids_shuffled = sorted(str(e["event_id"]) for _, e in shuffled.log())
    assert ids_shuffled == ids_in_order == sorted(str(e["event_id"]) for e in events)


# ---------------------------------------------------------------- merge rules


@pytest.mark.parametrize("order", ["in_order", "reversed"])
@pytest.mark.parametrize("one_batch", [True, False], ids=["one_batch", "two_batches"])
def test_rerating_keeps_latest_rating_regardless_of_arrival_order(
    harness: Harness, order: str, one_batch: bool
) -> None:
    first = rating_event("r-early", "u", "181", 5.0, T0)
    later = rating_event("r-late", "u", "181", 1.0, T0 + 3600)
    other = rating_event("r-other", "u", "50", 4.0, T0 + 10)
    values = [encode(e) for e in (first, later, other)]
    if order == "reversed":
        values.reverse()
    if one_batch:
        harness.apply("rating", values)
    else:
        for v in values:
            harness.apply("rating", [v])

    state = harness.user("u")
    rating_at, rating, completion, last_at = state.history["181"].split("|")
    assert float(rating) == 1.0 and float(rating_at) == T0 + 3600
    assert completion == "" and float(last_at) == T0 + 3600
    assert state.rev == 3
    expected = expected_vector(harness.view, {"181": 1.0, "50": 4.0})
    np.testing.assert_allclose(state.vector, expected, atol=1e-5, rtol=0)  # type: ignore[arg-type]


def test_watch_completion_feeds_confidence(harness: Harness) -> None:
    rule = harness.view.rule
    harness.apply("rating", [encode(rating_event("r1", "u", "1", 2.0, T0)),
                             encode(rating_event("r2", "u", "2", 5.0, T0 + 1))])
    harness.apply("watch", [
        # completion above the rating's strength (2/5): the completion wins
        encode(watch_event("w1", "u", "1", T0 + 2, completion=0.9)),
        # a lower completion later does not lower the best one
        encode(watch_event("w2", "u", "1", T0 + 3, completion=0.2)),
        # below the rating's strength (5/5): the rating wins
        encode(watch_event("w3", "u", "2", T0 + 4, watched=1800, duration=3600)),
        # watched only, from seconds: 4500/6000 = 0.75
        encode(watch_event("w4", "u", "3", T0 + 5, watched=4500, duration=6000)),
        # under min_completion: no preference at all (confidence 1)
        encode(watch_event("w5", "u", "4", T0 + 6, watched=60, duration=6000)),
    ])
    state = harness.user("u")
    assert float(state.history["1"].split("|")[2]) == 0.9
    assert float(state.history["3"].split("|")[2]) == 0.75

    from recsys_core.foldin import fold_in_user

    a = rule.alpha
    confidence = {"1": 1 + a * 0.9, "2": 1 + a * 1.0, "3": 1 + a * 0.75, "4": 1.0}
    movies = harness.view.bundle.movies
    expected = fold_in_user(
        harness.view.bundle.item_factors, harness.view.bundle.yty,
        np.array([movies.index(m) for m in confidence]), np.array(list(confidence.values())),
        harness.view.regularization)
    np.testing.assert_allclose(state.vector, expected, atol=1e-5, rtol=0)  # type: ignore[arg-type]
    # the same through the rule's own combination
    np.testing.assert_allclose(
        expected_vector(harness.view, {"1": 2.0, "2": 5.0},
                        {"1": 0.9, "2": 0.5, "3": 0.75, "4": 0.01}),
        expected, atol=1e-6, rtol=0)


def test_event_for_unknown_movie_is_stored_but_left_out_of_the_vector(
    harness: Harness,
) -> None:
    known = [rating_event(f"k{m}", "u", str(m), 4.0, T0 + m) for m in (1, 7, 50, 100)]
    unknown = rating_event("unk", "u", "no-such-movie", 5.0, T0 + 500)
    result = harness.apply("rating", [encode(e) for e in [*known, unknown]])
    assert result.outcomes == {"applied": 5, "unknown_movie": 1}
    assert result.vectors_updated == 1

    state = harness.user("u")
    assert "no-such-movie" in state.history and state.rev == 5
    assert state.vector is not None and np.all(np.isfinite(state.vector))
    expected = expected_vector(harness.view, {str(m): 4.0 for m in (1, 7, 50, 100)})
    np.testing.assert_allclose(state.vector, expected, atol=1e-5, rtol=0)

    # a user who only has unknown movies gets the zero vector, not an error
    result = harness.apply("rating", [encode(rating_event("unk2", "v", "nope", 3.0, T0))])
    assert result.outcomes == {"applied": 1, "unknown_movie": 1}
    vector = harness.user("v").vector
    assert vector is not None and not vector.any()


def test_duplicate_of_unknown_movie_event_is_counted_only_as_duplicate(
    harness: Harness,
) -> None:
    value = encode(rating_event("unk-dup", "u", "no-such-movie", 5.0, T0))
    assert harness.apply("rating", [value]).outcomes == {"applied": 1, "unknown_movie": 1}
    assert harness.apply("rating", [value]).outcomes == {"duplicate": 1}


def test_history_is_capped_to_the_newest_movies(client: redis.Redis, view: ModelView,
                                                unique_name: str) -> None:
    harness = Harness(client, view, unique_name, cap=10)
    events = [rating_event(f"c{m}", "u", str(m), 1.0 + m % 5, T0 + 60 * m)
              for m in range(1, 26)]
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    for batch in chunks(shuffled, 4):
        harness.apply("rating", [encode(e) for e in batch])

    state = harness.user("u")
    newest = {str(m) for m in range(16, 26)}
    assert set(state.history) == newest and set(state.recent) == newest
    assert state.rev == 25
    assert len(harness.log()) == 25
    expected = expected_vector(harness.view, latest_ratings(events[15:]))
    np.testing.assert_allclose(state.vector, expected, atol=1e-5, rtol=0)  # type: ignore[arg-type]


def test_late_event_for_a_movie_dropped_by_the_cap_starts_the_pair_afresh(
    client: redis.Redis, view: ModelView, unique_name: str
) -> None:
    """The documented limit of the cap (recsys_core/userstate.py): a movie dropped for age
    forgets its old rating; a watch of it arriving later starts the pair from the watch."""
    events = [rating_event("a-rating", "u", "1", 5.0, T0 + 1)]
    events += [rating_event(f"r{m}", "u", str(m), 3.0, T0 + m) for m in range(2, 13)]
    events.append(watch_event("a-watch", "u", "1", T0 + 100, completion=0.3))

    in_order = Harness(client, view, f"{unique_name}-in-order", cap=10)
    for e in events:
        in_order.apply(kind_for(e), [encode(e)])
    pair = PairState.unpack(in_order.user("u").history["1"])
    assert pair.rating is None and pair.completion == 0.3
    assert len(in_order.user("u").history) == 10

    reordered = Harness(client, view, f"{unique_name}-reordered", cap=10)
    for e in [events[-1], *events[:-1]]:
        reordered.apply(kind_for(e), [encode(e)])
    kept = PairState.unpack(reordered.user("u").history["1"])
    assert kept.rating == 5.0 and kept.completion == 0.3
    # every other pair is the same either way
    a, b = in_order.user("u").history, reordered.user("u").history
    assert {m: v for m, v in a.items() if m != "1"} == {m: v for m, v in b.items() if m != "1"}


def kind_for(event: dict[str, object]) -> EventType:
    return "rating" if "rating" in event else "watch"


def test_concurrent_rating_and_watch_batches_leave_the_newest_vector(
    redis_server: RedisServer, view: ModelView, unique_name: str
) -> None:
    """Each user gets a rating and a watch at the same moment from two threads, each with its
    own processor and connection, as two agents or two workers would."""
    keys = Keys(unique_name)
    clients = [redis_server.client(), redis_server.client()]
    processors = [StreamProcessor(UserStateStore(c, keys=keys), lambda: view) for c in clients]
    barrier = threading.Barrier(2, timeout=30)
    stale: list[str] = []
    errors: list[BaseException] = []

    def run(kind: EventType, processor: StreamProcessor, users: range) -> None:
        try:
            for u in users:
                barrier.wait()
                if kind == "rating":
                    event = rating_event(f"r{u}", f"u{u}", "50", 4.0, T0)
                else:
                    event = watch_event(f"w{u}", f"u{u}", "181", T0 + 1, completion=0.8)
                processor.process(kind, [Record(encode(event), f"{TOPIC}.{kind}", 0, u)])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            barrier.abort()

    try:
        # rounds of users until one ends stale (the race needs an unlucky interleaving)
        for start in range(0, 2000, 200):
            users = range(start, start + 200)
            threads = [threading.Thread(target=run, args=(kind, processor, users))
                       for kind, processor in zip(("rating", "watch"), processors, strict=True)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            for u in users:
                state = read_user(clients[0], keys, f"u{u}")
                assert state.rev == 2
                if state.vector_rev != state.rev:
                    stale.append(f"u{u}")
            if stale:
                break
    finally:
        for c in clients:
            c.close()
    assert stale == [], f"{len(stale)} users keep the vector of rev 1: {stale[:5]}"


def test_event_log_holds_each_applied_event_once(harness: Harness) -> None:
    events = [rating_event(f"log-{n}", f"u{n % 3}", str(1 + n), 3.0, T0 + n) for n in range(12)]
    watch = watch_event("log-w", "u0", "500", T0 + 99, completion=0.5)
    values = [encode(e) for e in events]
    harness.apply("rating", values[:8] + values[:3])
    harness.apply("watch", [encode(watch), encode(watch)])
    harness.apply("rating", values[5:] + values[::2])

    log = harness.log()
    ids = [str(e["event_id"]) for _, e in log]
    assert sorted(ids) == sorted([str(e["event_id"]) for e in events] + ["log-w"])
    assert len(ids) == len(set(ids)) == 13
    # the log keeps the producer's bytes, tagged with the type
    raw = harness.client.xrange(harness.keys.event_log())
    by_id = {str(e["event_id"]): e for e in events}
    for (_, fields), (kind, event) in zip(raw, log, strict=True):
        sent = encode(watch) if kind == "watch" else encode(by_id[str(event["event_id"])])
        assert fields[b"e"] == kind.encode() + b" " + sent


# ---------------------------------------------------------------- dead letters

VALID = rating_event("bad-1", "u", "1", 4.0, T0)


def _without(field: str) -> bytes:
    return encode({k: v for k, v in VALID.items() if k != field})


INVALID: list[tuple[str, bytes | None, str]] = [
    ("truncated_json", b'{"event_id": "bad-1", "user_id": "u"', "malformed_json"),
    ("not_utf8", b'{"event_id": "\xff\xfe"}', "malformed_json"),
    ("zero_length", b"", "empty"),
    ("only_whitespace", b" \n", "empty"),
    ("user_id_with_a_slash", encode({**VALID, "user_id": "a/b"}), "out_of_range"),
    ("movie_id_dot_dot", encode({**VALID, "movie_id": ".."}), "out_of_range"),
    ("user_id_not_ascii", encode({**VALID, "user_id": "Jos\u00e9"}), "out_of_range"),
    ("json_array", b"[1, 2, 3]", "not_an_object"),
    ("json_string", b'"rating"', "not_an_object"),
    ("json_null", b"null", "not_an_object"),
    ("no_user_id", _without("user_id"), "missing_field"),
    ("no_occurred_at", _without("occurred_at"), "missing_field"),
    ("rating_as_string", encode({**VALID, "rating": "4"}), "wrong_type"),
    ("rating_as_bool", encode({**VALID, "rating": True}), "wrong_type"),
    ("user_id_as_list", encode({**VALID, "user_id": ["u"]}), "wrong_type"),
    ("time_not_iso", encode({**VALID, "occurred_at": "yesterday"}), "wrong_type"),
    # a time without a timezone is a format error like the one above
    ("time_without_timezone", encode({**VALID, "occurred_at": "2020-01-01T00:00:00"}),
     "wrong_type"),
    ("rating_7", encode({**VALID, "rating": 7}), "out_of_range"),
    ("rating_0", encode({**VALID, "rating": 0}), "out_of_range"),
    ("time_in_2100", encode({**VALID, "occurred_at": "2100-01-01T00:00:00Z"}), "out_of_range"),
    ("time_in_1980", encode({**VALID, "occurred_at": "1980-01-01T00:00:00Z"}), "out_of_range"),
    ("oversized", encode({**VALID, "padding": "x" * MAX_EVENT_BYTES}), "oversized"),
    ("tombstone", None, "empty"),
]


@pytest.mark.parametrize(("value", "reason"), [(v, r) for _, v, r in INVALID],
                         ids=[name for name, _, _ in INVALID])
def test_invalid_event_is_dead_lettered_with_its_reason(
    harness: Harness, value: bytes | None, reason: str
) -> None:
    record = Record(value, "ratings.v1", 3, 1234, b"the-key")
    result = harness.processor.process("rating", [record])

    assert result.outcomes == {"invalid": 1}
    assert [d.reason for d in result.dead_letters] == [reason]
    letter = result.dead_letters[0]
    assert letter.key == b"the-key"
    body = json.loads(letter.value)
    assert body["reason"] == reason and body["detail"]
    assert (body["topic"], body["partition"], body["offset"]) == ("ratings.v1", 3, 1234)
    assert base64.b64decode(body["raw_base64"]) == (value or b"")
    datetime.fromisoformat(body["failed_at"])
    assert harness.client.keys(f"{harness.keys.prefix}:*") == []


def test_oversized_limit_is_on_bytes_not_fields(harness: Harness) -> None:
    """Just under the limit is fine (unknown fields are ignored); one byte over is not."""
    base = encode({**VALID, "padding": ""})
    fits = encode({**VALID, "padding": "x" * (MAX_EVENT_BYTES - len(base))})
    assert len(fits) == MAX_EVENT_BYTES
    assert harness.apply("rating", [fits]).outcomes == {"applied": 1}
    over = encode({**VALID, "event_id": "bad-2",
                   "padding": "x" * (MAX_EVENT_BYTES - len(base) + 1)})
    assert [d.reason for d in harness.apply("rating", [over]).dead_letters] == ["oversized"]


def test_invalid_events_do_not_stop_the_batch(harness: Harness) -> None:
    good = [rating_event(f"g{n}", "u", str(n), 4.0, T0 + n) for n in range(1, 6)]
    values: list[bytes | None] = [encode(e) for e in good]
    values[2:2] = [b"{", None, encode({**VALID, "rating": 9})]
    result = harness.apply("rating", values)
    assert result.outcomes == {"applied": 5, "invalid": 3}
    assert [d.reason for d in result.dead_letters] == ["malformed_json", "empty", "out_of_range"]
    assert [json.loads(d.value)["offset"] for d in result.dead_letters] == [2, 3, 4]
    assert harness.user("u").rev == 5


# ---------------------------------------------------------------- catalog


def test_catalog_event_stores_movie_with_content_vector(harness: Harness) -> None:
    event = {
        "event_id": "cat-1", "movie_id": "new-movie-1", "title": "A New Western",
        "year": 1996, "genres": ["Western", "Drama"],
        "people": {"director": ["Someone Unknown"]}, "tags": ["Dusty"],
        "occurred_at": "2020-01-01T00:00:00Z",
    }
    result = harness.apply("catalog", [encode(event)], key=b"new-movie-1")
    assert result.outcomes == {"applied": 1}

    stored = harness.client.hgetall(harness.keys.catalog_movie("new-movie-1"))
    assert stored[b"title"] == b"A New Western" and stored[b"year"] == b"1996"
    assert stored[b"genres"] == b"Western|Drama"
    assert json.loads(stored[b"people"]) == {"director": ["Someone Unknown"]}
    assert stored[b"vector_version"] == str(harness.view.version).encode()
    dim = harness.view.bundle.content_vectors.shape[1]
    vector = np.frombuffer(stored[b"vector"], dtype="<f4")
    assert vector.shape == (dim,)
    expected = content_vector(harness.view.bundle, CatalogEvent.model_validate_json(
        encode(event)).tokens())
    np.testing.assert_allclose(vector, expected, atol=1e-6, rtol=0)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5  # known genres: a unit vector
    assert harness.client.smembers(harness.keys.catalog_index()) == {b"new-movie-1"}


def test_catalog_event_without_known_tokens_gets_zero_vector(harness: Harness) -> None:
    event = {"event_id": "cat-2", "movie_id": "m-x", "title": "Untitled",
             "genres": ["Not-A-Genre"], "occurred_at": "2020-01-01T00:00:00Z"}
    assert harness.apply("catalog", [encode(event)]).outcomes == {"applied": 1}
    stored = harness.client.hgetall(harness.keys.catalog_movie("m-x"))
    vector = np.frombuffer(stored[b"vector"], dtype="<f4")
    assert vector.shape == (harness.view.bundle.content_vectors.shape[1],)
    assert not vector.any() and stored[b"year"] == b""


def test_processor_without_model_stores_history_but_no_vector(
    client: redis.Redis, unique_name: str
) -> None:
    store = UserStateStore(client, keys=Keys(unique_name))
    processor = StreamProcessor(store, lambda: None)
    result = processor.process("rating", [
        Record(encode(rating_event("nm-1", "u", "1", 4.0, T0)), TOPIC, 0, 0)])
    assert result.outcomes == {"applied": 1} and result.vectors_updated == 0
    state = read_user(client, Keys(unique_name), "u")
    assert set(state.history) == {"1"} and state.rev == 1 and state.vector is None


# ---------------------------------------------------------------- refold after a new version


def other_version(view: ModelView, version: int) -> ModelView:
    """The same model with permuted factor columns: every fold-in changes."""
    bundle = dataclasses.replace(view.bundle, version=version,
                                 item_factors=view.bundle.item_factors[:, ::-1].copy())
    bundle.yty = bundle.item_factors.T.astype(np.float64) @ bundle.item_factors
    return ModelView(bundle)


def test_refold_recomputes_recently_active_users_only_for_the_new_version(
    harness: Harness, ml100k: Dataset
) -> None:
    recent = {u: ml100k_user_events(ml100k, raw, u) for u, raw in (("a", "1"), ("b", "2"))}
    old = ml100k_user_events(ml100k, "3", "c")
    for events in [*recent.values(), old]:
        harness.apply("rating", [encode(e) for e in events])
    # c was last active two days ago
    harness.client.zadd(harness.keys.active_users(), {"c": time.time() - 2 * 86400})
    v2 = other_version(harness.view, 2)
    seen, written = harness.processor.refold_active(v2, window_seconds=86400, chunk=1)
    assert (seen, written) == (2, 2)
    for user, events in recent.items():
        state = harness.user(user)
        assert state.vector_version == 2
        np.testing.assert_allclose(state.vector, expected_vector(v2, latest_ratings(events)),
                                   atol=1e-5)
    assert harness.user("c").vector_version == 1  # left to the lazy path
    assert harness.client.zscore(harness.keys.active_users(), "c") is None  # forgotten
    # again: nothing stale any more
    assert harness.processor.refold_active(v2, window_seconds=86400) == (2, 0)


# ---------------------------------------------------------------- the processing helper process


def test_offloaded_batches_match_inline_and_survive_a_dead_helper(
    client: redis.Redis, view: ModelView, redis_server: RedisServer, ml100k: Dataset,
    unique_name: str, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import asyncio
    import os
    import signal

    from streams.offload import ProcessOffload, _helper_pid
    from streams.settings import StreamSettings

    model_dir = shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)
    settings = StreamSettings(redis_url=redis_server.url, model_dir=model_dir,
                              key_prefix=f"{unique_name}-off")
    inline = Harness(client, view, f"{unique_name}-in")
    events = ml100k_user_events(ml100k, "5", "u5") + ml100k_user_events(ml100k, "6", "u6")
    records = [Record(encode(e), TOPIC, 0, n) for n, e in enumerate(events)]
    half = len(records) // 2
    offload = ProcessOffload(settings)

    async def run() -> list[BatchResult]:
        await offload.start()
        first = await offload.process("rating", records[:half], view.version)
        pid = await asyncio.get_running_loop().run_in_executor(offload.pool, _helper_pid)
        os.kill(pid, signal.SIGKILL)  # the helper dies between batches
        second = await offload.process("rating", records[half:], view.version)
        return [first, second]

    try:
        results = asyncio.run(run())
    finally:
        offload.close()
    assert sum(r.outcomes.get("applied", 0) for r in results) == len(events)
    inline.apply("rating", [encode(e) for e in events])
    offloaded = Harness(client, view, f"{unique_name}-off")
    for user in ("u5", "u6"):
        assert_same_user_state(offloaded.user(user), inline.user(user), user)


def test_events_for_a_movie_in_the_last_served_top_10_count_as_live_hits(
    harness: Harness,
) -> None:
    harness.client.set(harness.keys.served("s1"), "50,181,172", ex=60)
    result = harness.apply("rating", [
        encode(rating_event("s1-a", "s1", "181", 5.0, T0)),      # served: a hit
        encode(rating_event("s1-b", "s1", "1", 3.0, T0 + 1)),    # served a list, a miss
        encode(rating_event("s1-a", "s1", "181", 5.0, T0)),      # duplicate: not counted
        encode(rating_event("s2-a", "s2", "50", 4.0, T0 + 2)),   # never served: not counted
    ])
    assert result.outcomes.get("served_event") == 2
    assert result.outcomes.get("served_hit") == 1
    assert result.outcomes.get("applied") == 3
