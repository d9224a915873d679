"""One id grammar for user and movie ids in the stream (and the API, which uses the same
pattern); watches past their duration count as full; an empty value is ``empty``."""

from __future__ import annotations

import json
import re

import pytest

from recsys_core.errors import InvalidEvent
from recsys_core.events import ID_PATTERN, WatchEvent, parse_event

GOOD = ["42", "193609", "u-2f83a485", "user@example.com", "urn:acme:user:17",
        "0b7c4e5a-8d9e-4f3a-9c1b-2d3e4f5a6b7c", "a.b_c~d+e", "x" * 128]
BAD = ["", "a/b", "..", ".", ".hidden", "a b", "tab\there", "%2F", "José", "x" * 129,
       "semi;colon", "q?x", "frag#x"]


def rating(**fields: object) -> bytes:
    base = {"event_id": "e/1", "user_id": "42", "movie_id": "50", "rating": 4,
            "occurred_at": "2026-11-24T10:00:00Z"}
    return json.dumps({**base, **fields}).encode()


@pytest.mark.parametrize("raw", GOOD)
def test_user_and_movie_ids_of_the_grammar_are_accepted(raw: str) -> None:
    event = parse_event("rating", rating(user_id=raw, movie_id=raw))
    assert (event.user_id, event.movie_id) == (raw, raw)
    assert re.fullmatch(ID_PATTERN, raw)


@pytest.mark.parametrize("raw", BAD)
def test_ids_outside_the_grammar_are_out_of_range(raw: str) -> None:
    for field in ("user_id", "movie_id"):
        with pytest.raises(InvalidEvent) as caught:
            parse_event("rating", rating(**{field: raw}))
        assert caught.value.reason in ("out_of_range", "missing_field"), caught.value
    assert not re.fullmatch(ID_PATTERN, raw)


def test_event_ids_keep_their_wider_grammar() -> None:
    assert parse_event("rating", rating(event_id="ratings/2026/1")).event_id == "ratings/2026/1"


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n", None])
def test_an_empty_value_is_empty_not_malformed(raw: bytes | None) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event("rating", raw)
    assert caught.value.reason == "empty"


def test_watched_seconds_past_the_duration_is_a_full_watch() -> None:
    raw = json.dumps({"event_id": "w1", "user_id": "42", "movie_id": "50",
                      "watched_seconds": 8000, "duration_seconds": 7200,
                      "occurred_at": "2026-11-24T10:00:00Z"}).encode()
    event = parse_event("watch", raw)
    assert isinstance(event, WatchEvent) and event.watch_completion == 1.0
