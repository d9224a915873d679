"""The API's follows and its "From people you follow" row.

- ``GET /v1/users/{u}/follows``: the people the user follows (only follows the user made:
  follow events are keyed by the follower, and these routes write for the user in the path).
- ``POST /v1/users/{u}/follows`` ``{"followee_id": ...}`` and
  ``DELETE /v1/users/{u}/follows/{followee}``: conveniences that produce a follow or an
  unfollow event to ``follows.v1`` (202 once the broker has it); the stream applies it.
- ``GET /v1/users/{u}/from-follows``: movies the people the user follows rated highly or
  watched lately (:mod:`recsys_core.social`), never one the user has already rated or
  watched, each with a reason that names them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from adapters.follow_store import FollowStore
from recsys_core.errors import InvalidEvent
from recsys_core.events import ID_PATTERN, MAX_ID_LENGTH, parse_event
from recsys_core.scoring import exclusions, top_k
from recsys_core.social import Inbox, social_reason, social_scores, social_sources
from serving import schemas
from serving.service import ApiError, Service
from serving.settings import ServingSettings

#: fade of the followees' entries: half weight after this many days of event time
HALF_LIFE_DAYS = 30.0


UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                             description="A user id (the stream's id grammar)")]


class FollowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    followee_id: str = Field(min_length=1, max_length=128, pattern=ID_PATTERN,
                             examples=["196"])
    event_id: str | None = Field(None, min_length=1, max_length=128)


class Followee(BaseModel):
    user_id: str
    since: float = Field(description="when the follow was made (seconds since the epoch)")


class Follows(BaseModel):
    user_id: str
    follows: list[Followee]


class SocialMovie(schemas.RecommendedMovie):
    followees: list[str] = Field(description="who you follow acted on it, strongest first")


class FromFollows(BaseModel):
    user_id: str
    model_version: int
    items: list[SocialMovie]
    follows: int = Field(description="how many people the user follows")


def add_social_routes(app: FastAPI, service: Service, settings: ServingSettings,
                      reads: Any, writes: Any, read_errors: Any, write_errors: Any) -> None:
    store = FollowStore(service.state.client, settings.keys)

    def produce(user_id: str, followee: str, action: str, event_id: str | None
                ) -> dict[str, Any]:
        data = {"event_id": event_id or str(uuid.uuid4()),
                "occurred_at": datetime.now(UTC).isoformat(), "user_id": user_id,
                "followee_id": followee, "action": action}
        try:
            event = parse_event("follow", json.dumps(data).encode())
        except InvalidEvent as exc:
            raise ApiError(422, exc.reason, exc.detail) from None
        service.send([("follow", event)])
        return {"accepted": [event.event_id], "rejected": []}

    @app.get("/v1/users/{user_id}/follows", response_model=Follows, tags=["social"],
             dependencies=reads, responses=read_errors)
    def follows(user_id: UserId) -> dict[str, Any]:
        """The people this user follows, newest follow first."""
        mine, _ = store.read(user_id)
        ordered = sorted(mine.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"user_id": user_id,
                "follows": [{"user_id": who, "since": at} for who, at in ordered]}

    @app.post("/v1/users/{user_id}/follows", status_code=202,
              response_model=schemas.EventsAccepted, tags=["social"], dependencies=writes,
              responses=write_errors)
    def follow(user_id: UserId, body: Annotated[FollowIn, Body()]) -> dict[str, Any]:
        """Follow someone (their ratings and watches then reach "From people you follow")."""
        return produce(user_id, body.followee_id, "follow", body.event_id)

    @app.delete("/v1/users/{user_id}/follows/{followee_id}", status_code=202,
                response_model=schemas.EventsAccepted, tags=["social"], dependencies=writes,
                responses=write_errors)
    def unfollow(user_id: UserId,
                 followee_id: UserId) -> dict[str, Any]:
        """Stop following someone; their entries leave the row at once."""
        return produce(user_id, followee_id, "unfollow", None)

    @app.get("/v1/users/{user_id}/from-follows", response_model=FromFollows,
             tags=["social"], dependencies=reads, responses=read_errors)
    def from_follows(user_id: UserId,
                     k: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        """What the people this user follows rated highly or watched lately, not yet seen
        by the user."""
        model = service.model()
        mine, entries = store.read(user_id)
        movies = model.bundle.movies
        known = [(e.followee, idx, e.rating, e.completion, e.timestamp)
                 for e in entries if (idx := movies.get(e.movie_id)) is not None]
        out: dict[str, Any] = {"user_id": user_id, "model_version": model.version,
                               "items": [], "follows": len(mine)}
        if not known:
            return out
        inbox = Inbox.of(known)
        now = float(inbox.timestamp.max())  # the event clock: replays fade alike
        scores = social_scores(inbox, model.n_items, now, HALF_LIFE_DAYS)
        if scores is None:
            return out
        view = service.user_view(model, service.snapshot(model, user_id))
        drop = exclusions(view.history, True, None, view.dropped_idx(model))
        allowed = scores > 0
        idx, top = top_k(scores, k, drop, allowed)
        sources = social_sources(inbox, idx, now, HALF_LIFE_DAYS)
        for i, s in zip(idx.tolist(), top.tolist(), strict=True):
            src = sources[int(i)]
            out["items"].append({**model.brief(int(i)), "score": round(float(s), 4),
                                 "reason": social_reason(src), "followees":
                                 list(src.followees)})
        return out
