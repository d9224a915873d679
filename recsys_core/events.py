"""Versioned event schemas: the wire contract shared by the stream, the API and the replay tool.

Values are UTF-8 JSON objects, one event per message. Fields the schema knows are strict;
unknown fields are ignored (producers may add optional fields without a version change).
Ids are strings; numbers are accepted and turned into strings. User and movie ids follow
one grammar, the API's too (:data:`ID_PATTERN`): 1-128 ASCII letters, digits and
``. _ ~ : @ + -``, not starting with a dot, so that every id is one URL path segment as it
is, in every client and proxy (no ``/``, ``%``, space, control or non-ASCII character;
never ``.`` or ``..``) and every regex dialect reads the pattern alike.
Event ids are any 1-128 characters without whitespace. Times are ISO 8601 with a
timezone. :func:`parse_event` turns raw bytes into an event or raises :class:`InvalidEvent`
with a short reason code used for dead letters and metrics.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from recsys_core.errors import InvalidEvent

MAX_EVENT_BYTES = 16 * 1024
MAX_ID_LENGTH = 128
#: user and movie ids, in the stream and in the API's paths
ID_PATTERN = r"^[A-Za-z0-9_~:@+-][A-Za-z0-9._~:@+-]{0,127}$"
#: event ids: anything a producer may use, without whitespace or control characters
EVENT_ID_PATTERN = r"^[^\s\x00-\x1f\x7f]{1,128}$"
#: events may be stamped at most this far in the future (clock skew) ...
MAX_FUTURE = timedelta(hours=24)
#: ... and no earlier than this (MovieLens starts in 1995)
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)

EventType = Literal["rating", "watch", "catalog", "follow"]


def _id(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("an id must be a string or an integer, not a boolean")
    if isinstance(value, int):
        return str(value)
    return value


# the constraints come before the BeforeValidator (which still runs first) so pydantic-core
# checks them natively instead of in Python after the conversion: 40% less time per event
Id = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN),
    BeforeValidator(_id),
]
EventId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=EVENT_ID_PATTERN),
    BeforeValidator(_id),
]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    event_id: EventId
    occurred_at: datetime

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("occurred_at must be an ISO 8601 time") from None
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("occurred_at needs a timezone (e.g. 2026-11-24T10:00:00Z)")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _time_in_range(cls, value: datetime) -> datetime:
        if value < EARLIEST or value > datetime.now(UTC) + MAX_FUTURE:
            raise ValueError("occurred_at is out of range")
        return value.astimezone(UTC)

    @property
    def timestamp(self) -> float:
        return self.occurred_at.timestamp()

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class RatingEvent(_Event):
    type: Literal["rating"] = Field(default="rating", exclude=True)
    user_id: Id
    movie_id: Id
    rating: float = Field(ge=0.5, le=5.0)

    @field_validator("rating", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("rating must be a number")
        return float(value)


class WatchEvent(_Event):
    type: Literal["watch"] = Field(default="watch", exclude=True)
    user_id: Id
    movie_id: Id
    watched_seconds: float | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    duration_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    completion: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("watched_seconds", "duration_seconds", "completion", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return float(value)

    @model_validator(mode="after")
    def _has_progress(self) -> WatchEvent:
        if self.completion is None and (
            self.watched_seconds is None or self.duration_seconds is None
        ):
            raise ValueError("a watch needs completion, or watched_seconds and duration_seconds")
        return self

    @property
    def watch_completion(self) -> float:
        """Share of the movie watched, in [0, 1]. ``watched_seconds`` above
        ``duration_seconds`` (rewinds, a second viewing, a rounded duration) is a full
        watch: clamped to 1, on purpose and documented, not an error."""
        if self.completion is not None:
            return self.completion
        watched = self.watched_seconds or 0.0
        duration = self.duration_seconds or 1.0
        return min(1.0, watched / duration)


class CatalogEvent(_Event):
    type: Literal["catalog"] = Field(default="catalog", exclude=True)
    movie_id: Id
    title: str = Field(min_length=1, max_length=500)
    year: int | None = Field(default=None, ge=1870, le=2100)
    genres: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=32
    )
    people: dict[
        Literal["director", "writer", "actor", "producer"],
        list[Annotated[str, Field(min_length=1, max_length=200)]],
    ] = Field(default_factory=dict)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=100
    )

    def tokens(self) -> list[str]:
        """``kind=value`` tokens in the content model's vocabulary."""
        out = [f"genre={g}" for g in self.genres]
        for kind, names in self.people.items():
            out += [f"{kind}={n}" for n in names]
        out += [f"tag={t.strip().lower()}" for t in self.tags]
        if self.year:
            out.append(f"decade={self.year // 10 * 10}")
        return out


class FollowEvent(_Event):
    """``user_id`` starts (``follow``) or stops (``unfollow``) following ``followee_id``;
    keyed by ``user_id`` (the follower), so only a user's own events change their follows.
    The newest ``occurred_at`` of a pair wins (a late or repeated event changes nothing)."""

    type: Literal["follow"] = Field(default="follow", exclude=True)
    user_id: Id
    followee_id: Id
    action: Literal["follow", "unfollow"] = "follow"

    @model_validator(mode="after")
    def _not_self(self) -> FollowEvent:
        if self.user_id == self.followee_id:
            raise ValueError("out of range: a user cannot follow themselves")
        return self


Event = RatingEvent | WatchEvent | CatalogEvent | FollowEvent
SCHEMAS: dict[EventType, type[RatingEvent] | type[WatchEvent] | type[CatalogEvent]
              | type[FollowEvent]] = {
    "rating": RatingEvent,
    "watch": WatchEvent,
    "catalog": CatalogEvent,
    "follow": FollowEvent,
}


def _reason(exc: ValidationError) -> InvalidEvent:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "event"
    kind = err["type"]
    if kind == "json_invalid":
        return InvalidEvent("malformed_json", str(err.get("msg", "")))
    if kind == "model_type":
        return InvalidEvent("not_an_object", "an event must be a JSON object")
    if kind == "missing":
        reason = "missing_field"
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than",
                  "too_long", "too_short", "string_too_long", "string_too_short",
                  "string_pattern_mismatch") or "out of range" in str(err.get("msg", "")):
        reason = "out_of_range"
    else:
        reason = "wrong_type"
    return InvalidEvent(reason, f"{field}: {err['msg']}")


def validate_event(kind: EventType, data: Any) -> Event:
    """Validate an already-decoded JSON value as an event of ``kind``."""
    if not isinstance(data, dict):
        raise InvalidEvent("not_an_object", "an event must be a JSON object")
    try:
        return SCHEMAS[kind].model_validate(data)
    except ValidationError as exc:
        raise _reason(exc) from None


def parse_event(kind: EventType, raw: bytes | bytearray | memoryview | None) -> Event:
    """Decode and validate one message value."""
    if raw is None:
        raise InvalidEvent("empty", "the message has no value")
    raw = bytes(raw)
    if not raw.strip():
        raise InvalidEvent("empty", "the message value is empty")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("oversized", f"{len(raw)} bytes, at most {MAX_EVENT_BYTES}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("malformed_json", "the value is not UTF-8") from None
    try:
        return SCHEMAS[kind].model_validate_json(raw)
    except ValidationError as exc:
        raise _reason(exc) from None
