"""Dead letters always fit in one produce request, whatever the bad value's size."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from recsys_core.errors import InvalidEvent
from recsys_core.events import parse_event
from streams.processor import DEAD_LETTER_RAW_BYTES, Record, dead_letter

#: the producer's default max.request.size
MAX_REQUEST_BYTES = 1024 * 1024


def letter_for(value: bytes, key: bytes | None = b"42") -> tuple[dict[str, object], int]:
    record = Record(value, "ratings.v1", 3, 17, key)
    with pytest.raises(InvalidEvent) as caught:
        parse_event("rating", value)
    letter = dead_letter(record, caught.value)
    return json.loads(letter.value), len(letter.value) + len(letter.key or b"")


def test_a_900_kb_invalid_value_makes_a_letter_well_under_the_request_limit() -> None:
    value = b'{"user_id": "' + b"x" * (900 * 1024) + b'"}'
    body, size = letter_for(value)
    assert size < MAX_REQUEST_BYTES // 10
    assert body["reason"] == "oversized"
    assert body["raw_bytes"] == len(value) and body["raw_truncated"] is True
    assert body["raw_sha256"] == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(body["raw_base64"]) == value[:DEAD_LETTER_RAW_BYTES]
    assert (body["topic"], body["partition"], body["offset"]) == ("ratings.v1", 3, 17)


def test_a_small_bad_value_is_kept_whole_and_a_huge_key_is_cut() -> None:
    value = (b'{"event_id": "e1", "user_id": "1", "movie_id": "50", "rating": 9, '
             b'"occurred_at": "2026-11-24T10:00:00Z"}')
    body, _ = letter_for(value, key=b"k" * 2_000_000)
    assert body["reason"] == "out_of_range"
    assert base64.b64decode(body["raw_base64"]) == value
    assert body["raw_bytes"] == len(value) and body["raw_truncated"] is False
    _, size = letter_for(value, key=b"k" * 2_000_000)
    assert size < MAX_REQUEST_BYTES // 10
