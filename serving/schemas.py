"""Request and response bodies of the public API (``/v1``): a stable, documented contract."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FallbackReason = Literal[
    "cold_start",              # the user has no history the model knows: popularity
    "user_state_unavailable",  # Redis could not be read: popularity, no personal signal
    "stale_vector",            # the stored vector was from another model version: refolded
    "no_vector",               # history present but no stored vector yet: folded in now
]
#: the rankings a model serves (recsys_core/surfaces.py)
SurfaceName = Literal[
    "for_you",  # "Top picks for you": long-term taste (weights fitted on held-out taste)
    "up_next",  # "Up next": the moment (next-event weights, reordered by the reranker)
]


class Problem(BaseModel):
    """Every error: a machine-readable ``error`` and a sentence for people."""

    error: str = Field(examples=["unknown_movie"])
    detail: str = Field(examples=["no movie with id '99999999'"])


class RecommendedMovie(BaseModel):
    movie_id: str = Field(examples=["50"])
    title: str = Field(examples=["Star Wars (1977)"])
    score: float = Field(examples=[0.91])
    reason: str = Field(examples=["because you watched Return of the Jedi (1983)"])
    year: int | None = Field(None, examples=[1977])
    genres: list[str] = Field(default_factory=list, examples=[["Action", "Sci-Fi"]])


class Recommendations(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "user_id": "42", "model_version": 7, "surface": "for_you",
        "items": [{"movie_id": "50", "title": "Star Wars (1977)", "score": 0.91,
                   "reason": "because you watched Return of the Jedi (1983)",
                   "year": 1977, "genres": ["Action", "Sci-Fi"]}],
        "fallback_reason": None}]})

    user_id: str
    model_version: int
    #: the surface that ranked the items (the model's default when none was asked)
    surface: SurfaceName
    items: list[RecommendedMovie]
    fallback_reason: FallbackReason | None = None


class Movie(BaseModel):
    movie_id: str = Field(examples=["50"])
    title: str = Field(examples=["Star Wars (1977)"])
    year: int | None = Field(None, examples=[1977])
    genres: list[str] = Field(default_factory=list, examples=[["Action", "Sci-Fi"]])
    people: dict[str, list[str]] = Field(default_factory=dict,
                                         examples=[{"director": ["George Lucas"]}],
                                         description="People known by name, by kind")
    person_ids: dict[str, list[str]] = Field(
        default_factory=dict, examples=[{"actor": ["m.0htlr"]}],
        description="People the metadata knows only by an opaque id (e.g. Freebase in "
                    "ml-100k): ids, not names")
    popularity: float = Field(0.0, description="In [0, 1], the trainer's popularity")
    in_model: bool = Field(True, description="False for a movie known only from a catalog "
                           "event; it enters the next model version")


class SimilarMovies(BaseModel):
    movie_id: str
    by: Literal["taste", "content"]
    model_version: int
    items: list[RecommendedMovie]


class SearchHit(BaseModel):
    movie_id: str
    title: str
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    match: float = Field(description="How well the title matches, in [0, 1]")


class SearchResults(BaseModel):
    query: str
    items: list[SearchHit]


class PredictedRating(BaseModel):
    user_id: str
    movie_id: str
    predicted_rating: float = Field(examples=[4.2])
    your_rating: float | None = Field(None, description="The user's own latest rating")
    model_version: int
    fallback_reason: FallbackReason | None = None


class HistoryItem(BaseModel):
    movie_id: str
    title: str | None
    rating: float | None
    completion: float | None
    last_at: float


class UserProfile(BaseModel):
    user_id: str
    events_applied: int
    vector_version: int | None
    affinity: dict[str, float] = Field(
        description="The strongest content tokens of the user's taste, e.g. `genre=Drama`, "
                    "`director=Ridley Scott`; a person known only by an opaque id is marked "
                    "`actor_id=m.0htlr`")
    history: list[HistoryItem] = Field(description="Newest first")


class EventIn(BaseModel):
    """One rating or watch, as on the wire (README, "Wire format"), with its ``type``.
    ``event_id`` (a new UUID) and ``occurred_at`` (now) are filled in when absent."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"type": "rating", "user_id": "42", "movie_id": "50", "rating": 4.5},
        {"type": "watch", "user_id": "42", "movie_id": "50", "watched_seconds": 3400,
         "duration_seconds": 7200, "event_id": "b9d7c3e6", "occurred_at":
         "2026-11-24T10:00:00Z"}]})

    type: Literal["rating", "watch"]


class EventBatch(BaseModel):
    events: list[Any] = Field(
        description="Rating/watch events, each with a `type` (see EventIn)",
        examples=[[{"type": "rating", "user_id": "42", "movie_id": "50", "rating": 4.5}]])


class RejectedEvent(BaseModel):
    index: int
    reason: str = Field(examples=["out_of_range"])
    detail: str = Field(examples=["rating: Input should be less than or equal to 5"])


class EventsAccepted(BaseModel):
    accepted: list[str] = Field(description="event_id of every accepted event, in order")
    rejected: list[RejectedEvent]


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    movie_id: str = Field(min_length=1, max_length=128, examples=["50"])
    rating: float = Field(ge=0.5, le=5.0, examples=[4.5])
    event_id: str | None = Field(None, min_length=1, max_length=128)


class WatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    movie_id: str = Field(min_length=1, max_length=128, examples=["50"])
    completion: float = Field(ge=0.0, le=1.0, examples=[0.9])
    event_id: str | None = Field(None, min_length=1, max_length=128)


class ModelVersionInfo(BaseModel):
    version: int
    current: bool
    created_at: str | None
    metrics: dict[str, Any]
    gate: dict[str, Any] | None
    data_window: dict[str, Any] | None


class ModelAdmin(BaseModel):
    current_version: int | None
    served_version: int | None
    loaded_at: float | None
    blend_weights: dict[str, Any] | None
    versions: list[ModelVersionInfo]


class LagSummary(BaseModel):
    total: int
    partitions: dict[str, int]
    reported_at: float | None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Any] = Field(default_factory=dict)
