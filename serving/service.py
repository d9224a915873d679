"""What the endpoints do, apart from HTTP: blend stored factors with the fresh state from
Redis, filter, rank, explain; validate and produce events. Errors are :class:`ApiError`
with a status, a machine-readable code and a sentence."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.redis_store import UserSnapshot
from recsys_core.candidates import recommend_candidates
from recsys_core.errors import InvalidEvent, ModelNotLoaded
from recsys_core.events import Event, EventType, parse_event
from recsys_core.explain import content_reason, explain_items
from recsys_core.history import UserHistory
from recsys_core.names import mark_token
from recsys_core.rating import predict_rating
from recsys_core.rerank import CANDIDATES, rerank
from recsys_core.scoring import (
    blended_scores,
    content_profile,
    exclusions,
    top_k,
    user_vector,
)
from recsys_core.userstate import history_from_pairs
from serving import metrics
from serving.activity import LiveActivity
from serving.catalog import MIN_CONTENT_Z, SLOTS_PER_TEN, NewMovies, load_new_movies
from serving.model import ModelHolder, ServingModel
from serving.producer import BrokerUnavailable, EventSender
from serving.state import REDIS_ERRORS, StateReader, StateUnavailable

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5


@dataclass
class ApiError(Exception):
    status: int
    error: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def not_loaded(exc: ModelNotLoaded) -> ApiError:
    return ApiError(503, "model_not_loaded", str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})


@dataclass
class UserView:
    """A user's state as one request scores it."""

    history: UserHistory
    snapshot: UserSnapshot | None
    vector: npt.NDArray[np.float32] | None
    fallback_reason: str | None
    refolded: bool = False

    def dropped_idx(self, model: ServingModel) -> npt.NDArray[np.int64] | None:
        """Model indexes of the movies the history cap dropped: seen, so excluded for ever."""
        if self.snapshot is None or not self.snapshot.dropped:
            return None
        return model.bundle.movies.indices(list(self.snapshot.dropped), on_missing="drop")


class Service:
    def __init__(self, holder: ModelHolder, state: StateReader, sender: EventSender,
                 max_batch: int) -> None:
        self.holder = holder
        self.state = state
        self.sender = sender
        self.max_batch = max_batch
        self.new_movies = NewMovies()
        self.activity = LiveActivity()

    def warm_activity(self) -> None:
        """Seed the movie activity for a newly loaded model with a reranker here, in the
        background, not in the first request that needs it."""
        model = self.holder.model
        if model is not None and model.trees is not None:
            self.activity.for_bundle(model.bundle)

    def refresh_new_movies(self) -> None:
        """Pick up catalog-only movies (and re-vectorise them for a new model version)."""
        model = self.holder.model
        if model is None:
            return
        try:
            self.new_movies = load_new_movies(self.state.client, self.state.keys, model,
                                              self.new_movies)
        except REDIS_ERRORS as exc:
            log.info("catalog movies not refreshed: %s", exc)

    # -- reads ----------------------------------------------------------------------------

    def model(self) -> ServingModel:
        try:
            return self.holder.require()
        except ModelNotLoaded as exc:
            raise not_loaded(exc) from None

    def movie_index(self, model: ServingModel, movie_id: str) -> int:
        idx = model.bundle.movies.get(movie_id)
        if idx is None:
            raise ApiError(404, "unknown_movie", f"no movie with id {movie_id!r} in model "
                           f"version {model.version}")
        return idx

    def snapshot(self, model: ServingModel | None, user_id: str) -> UserSnapshot | None:
        """The user's state from Redis, or None while Redis is unreachable."""
        try:
            return self.state.user(user_id, model.factors if model else 0)
        except StateUnavailable:
            return None

    async def snapshot_async(self, model: ServingModel | None,
                             user_id: str) -> UserSnapshot | None:
        try:
            return await self.state.user_async(user_id, model.factors if model else 0)
        except StateUnavailable:
            return None

    def user_view(self, model: ServingModel, snap: UserSnapshot | None) -> UserView:
        """The user's history and a vector valid for this model version: the stored one when
        it is current, else folded in now (a vector of another version is never scored)."""
        if snap is None:
            return UserView(UserHistory.empty(), None, None, "user_state_unavailable")
        history, _ = history_from_pairs(snap.table, model.bundle, model.rule)
        if len(history) == 0:
            return UserView(history, snap, None, "cold_start")
        if (snap.vector is not None and snap.vector_version == model.version
                and snap.vector_rev == snap.rev):
            return UserView(history, snap, snap.vector, None)
        stale = snap.vector_version is not None and snap.vector_version != model.version
        vector = user_vector(model.bundle, history)
        return UserView(history, snap, vector, "stale_vector" if stale else None, True)

    def store_refolded(self, model: ServingModel, user_id: str, view: UserView) -> None:
        """After the response: keep a vector the request had to fold in (lazy recompute)."""
        if view.refolded and view.snapshot is not None and view.vector is not None:
            self.state.write_vector(user_id, view.vector, model.version, view.snapshot.rev,
                                    model.affinity.profile(view.history))

    def recommendations(
        self, model: ServingModel, snap: UserSnapshot | None, user_id: str, k: int,
        genres: list[str], year_min: int | None, year_max: int | None, exclude_seen: bool,
        exclude: list[str], surface: str | None = None,
    ) -> tuple[dict[str, Any], Callable[[], None] | None]:
        """The response body, and work for after the response (store a refolded vector).
        ``surface`` picks the weights and reranker (recsys_core/surfaces.py; None: the
        model's default)."""
        surface, weights, trees = model.surface(surface)
        if year_min is not None and year_max is not None and year_min > year_max:
            raise ApiError(422, "invalid_filter", "year_min is after year_max")
        try:
            allowed = model.allowed(genres, year_min, year_max)
        except KeyError as exc:
            raise ApiError(422, "unknown_genre", f"no genre {exc.args[0]!r}; known: "
                           f"{', '.join(model.genre_names)}") from None
        view = self.user_view(model, snap)
        timings: dict[str, float] = {}
        extra = [i for i in (model.bundle.movies.get(m) for m in exclude) if i is not None]
        extra_ids = np.asarray(extra, dtype=np.int64)
        dropped = view.dropped_idx(model)
        found = None
        if model.candidates is not None:  # a large catalogue: score candidates only
            found = recommend_candidates(model.bundle, model.candidates, view.history,
                                         weights, k=k, exclude_seen=exclude_seen,
                                         allowed=allowed, vector=view.vector,
                                         exclude=extra_ids, seen=dropped)
        if found is not None:
            idx, scores, item_parts = found
        else:
            want = max(k, CANDIDATES) if trees is not None else k
            # as recommend(), keeping the standardised components for the reranker
            total, z, parts = blended_scores(model.bundle, view.history, weights,
                                             view.vector, timings)
            idx, scores = top_k(total, want,
                                exclusions(view.history, exclude_seen, extra_ids, dropped),
                                allowed)
            if trees is not None and idx.size:
                t = time.perf_counter()
                idx, scores = rerank(trees, model.bundle, z, total, idx, view.history,
                                     self.activity.for_bundle(model.bundle))
                idx, scores = idx[:k], scores[:k]
                timings["rerank"] = time.perf_counter() - t
            item_parts = {n: p[idx] for n, p in parts.items()}
        for name, seconds in timings.items():
            metrics.BLEND_SECONDS.labels(name).observe(seconds)
        reasons = explain_items(model.bundle, view.history, weights, item_parts, idx)
        items = [self._item(model, int(i), float(s), r)
                 for i, s, r in zip(idx, scores, reasons, strict=True)]
        picks = self._new_movie_picks(model, view, k, genres, year_min, year_max, exclude)
        if picks:
            items = items[: max(0, k - len(picks))] + picks
        if view.fallback_reason:
            metrics.FALLBACKS.labels(view.fallback_reason).inc()
        body = {
            "user_id": user_id,
            "model_version": model.version,
            "surface": surface,
            "items": items,
            "fallback_reason": view.fallback_reason,
        }
        if not view.refolded:
            return body, None
        return body, lambda: self.store_refolded(model, user_id, view)

    def _new_movie_picks(
        self, model: ServingModel, view: UserView, k: int, genres: list[str],
        year_min: int | None, year_max: int | None, exclude: list[str],
    ) -> list[dict[str, Any]]:
        """Catalog-only movies whose content matches the user's profile strongly (content
        z-score ≥ MIN_CONTENT_Z over the model's catalogue), at most one slot in ten."""
        new = self.new_movies
        slots = max(1, k * SLOTS_PER_TEN // 10) if k >= 3 else 0
        if (not len(new) or new.version != model.version or not slots
                or len(view.history) == 0 or not model.weights.content):
            return []
        b = model.bundle
        profile = content_profile(b, view.history).astype(np.float32)
        if model.candidates is not None:  # the catalogue's mean and deviation, no pass
            mean, std = model.candidates.content_moments.of_product(profile)
        else:
            raw = b.content_vectors @ profile
            mean, std = float(raw.mean()), float(raw.std())
        if std == 0.0:
            return []
        z = (new.vectors @ profile - mean) / std
        seen = (set(view.snapshot.table.movie_ids) | view.snapshot.dropped
                if view.snapshot is not None else set())
        wanted = {g.lower() for g in genres}
        picks = []
        for n in np.argsort(-z, kind="stable").tolist():
            if z[n] < MIN_CONTENT_Z or len(picks) == slots:
                break
            movie_id, year = new.movie_ids[n], int(new.years[n])
            if movie_id in seen or movie_id in exclude:
                continue
            if wanted and not wanted & {g.lower() for g in new.genres[n]}:
                continue
            if (year_min is not None and year < year_min) or (
                    year_max is not None and not 0 < year <= year_max):
                continue
            src = int(view.history.item_idx[int(np.argmax(
                b.content_vectors[view.history.item_idx] @ new.vectors[n]))])
            picks.append({"movie_id": movie_id, "title": new.titles[n], "year": year or None,
                          "genres": new.genres[n],
                          "score": round(float(model.weights.content * z[n]), 4),
                          "reason": f"new in the catalogue, like {b.titles[src]}"})
        return picks

    @staticmethod
    def _item(model: ServingModel, idx: int, score: float, reason: str) -> dict[str, Any]:
        return {**model.brief(idx), "score": round(score, 4), "reason": reason}

    def movie(self, movie_id: str) -> dict[str, Any]:
        model = self.model()
        idx = model.bundle.movies.get(movie_id)
        if idx is not None:
            return {**model.movie(idx), "in_model": True}
        try:
            found = self.state.catalog_movie(movie_id)
        except StateUnavailable as exc:  # it may be a catalog-only movie: cannot say 404
            raise ApiError(503, "user_state_unavailable", f"movie {movie_id!r} is not in "
                           f"the model and Redis, which knows catalog-only movies, is "
                           f"unavailable: {exc}", {"Retry-After": str(RETRY_AFTER_SECONDS)}
                           ) from None
        if found is None:
            raise ApiError(404, "unknown_movie", f"no movie with id {movie_id!r}")
        return {**found, "in_model": False}

    def similar(self, movie_id: str, by: str, k: int) -> dict[str, Any]:
        model = self.model()
        b = model.bundle
        t = self.movie_index(model, movie_id)
        title = str(b.titles[t])
        if by == "taste":
            ptr, indices, vals = b.csr("neighbor")
            s, e = int(ptr[t]), int(ptr[t + 1])
            scores = np.full(b.n_items, -np.inf)
            scores[indices[s:e]] = vals[s:e]
            if e - s < k:  # thin row: complete with the closest ALS factors
                f = b.item_factors
                norms = np.linalg.norm(f, axis=1) * (np.linalg.norm(f[t]) or 1.0)
                cos = (f @ f[t]) / np.where(norms > 0, norms, 1.0)
                fill = np.isinf(scores)
                scores[fill] = cos[fill] - 10.0  # after every neighbour
            reason = f"people who watched {title} also watched this"
            reasons: Callable[[int], str] = lambda _i: reason  # noqa: E731
        else:
            scores = b.content_vectors.astype(np.float64) @ b.content_vectors[t]
            if not np.any(b.content_vectors[t]):
                scores = np.zeros(b.n_items)
            reasons = lambda i: content_reason(b, t, i)  # noqa: E731
        idx, vals = top_k(np.asarray(scores, np.float64), k,
                          exclude=np.asarray([t], np.int64))
        return {"movie_id": movie_id, "by": by, "model_version": model.version,
                "items": [self._item(model, int(i), float(v), reasons(int(i)))
                          for i, v in zip(idx, vals, strict=True)]}

    def search(self, query: str, limit: int) -> dict[str, Any]:
        model = self.model()
        items = []
        for idx, match in model.titles.search(query, limit):
            items.append({**model.brief(idx), "match": round(match, 3)})
        return {"query": query, "items": items}

    def because_you_watched(self, model: ServingModel, snap: UserSnapshot | None,
                            user_id: str, k: int) -> dict[str, Any]:
        """Movies like the user's most recent well-liked one (the web page's row)."""
        view = self.user_view(model, snap)
        h = view.history
        if len(h) == 0:
            return {"user_id": user_id, "source": None, "items": [],
                    "fallback_reason": view.fallback_reason}
        liked = np.flatnonzero(h.confidence >= np.median(h.confidence))
        source = int(h.item_idx[liked[-1] if liked.size else -1])
        dropped = view.snapshot.dropped if view.snapshot is not None else frozenset()
        similar = self.similar(model.bundle.movies.raw(source), "taste",
                               k + len(h) + len(dropped))
        seen = {model.bundle.movies.raw(int(i)) for i in h.item_idx} | dropped
        items = [it for it in similar["items"] if it["movie_id"] not in seen][:k]
        for it in items:
            it["reason"] = f"because you watched {model.bundle.titles[source]}"
        return {"user_id": user_id, "source": model.movie(source), "items": items,
                "fallback_reason": view.fallback_reason}

    def predicted_rating(self, model: ServingModel, snap: UserSnapshot | None, user_id: str,
                         movie_id: str) -> dict[str, Any]:
        b = model.bundle
        t = self.movie_index(model, movie_id)
        view = self.user_view(model, snap)
        h = view.history
        rated = np.isfinite(h.ratings)
        pred = predict_rating(b.rating_item_factors, b.rating_item_bias, model.rating_mean,
                              model.rating_reg, model.rating_bias_reg, h.item_idx[rated],
                              h.ratings[rated], [t])[0]
        own = h.ratings[h.item_idx == t]
        reason = view.fallback_reason
        if reason is None and not rated.any():
            reason = "cold_start"
        return {"user_id": user_id, "movie_id": movie_id,
                "predicted_rating": round(float(pred), 3),
                "your_rating": float(own[0]) if own.size and np.isfinite(own[0]) else None,
                "model_version": model.version,
                "fallback_reason": reason if reason != "stale_vector" else None}

    def profile(self, model: ServingModel | None, snap: UserSnapshot | None, user_id: str,
                limit: int = 100) -> dict[str, Any]:
        if snap is None:
            raise ApiError(503, "user_state_unavailable", "Redis is unreachable",
                           {"Retry-After": str(RETRY_AFTER_SECONDS)})
        if not snap.pairs and snap.rev == 0:
            raise ApiError(404, "unknown_user", f"no events for user {user_id!r} yet")
        pairs = sorted(snap.pairs.items(), key=lambda kv: -kv[1].last_at)[:limit]
        titles = model.bundle.titles if model else None
        history = []
        for movie_id, st in pairs:
            idx = model.bundle.movies.get(movie_id) if model else None
            history.append({"movie_id": movie_id,
                            "title": str(titles[idx]) if titles is not None and idx is not None
                            else None,
                            "rating": st.rating, "completion": st.completion,
                            "last_at": st.last_at})
        return {"user_id": user_id, "events_applied": snap.rev,
                "vector_version": snap.vector_version,
                "affinity": {mark_token(t): w for t, w in snap.affinity.items()},
                "history": history}

    # -- writes ---------------------------------------------------------------------------

    def post_events(self, items: list[Any]) -> dict[str, Any]:
        if len(items) > self.max_batch:
            raise ApiError(413, "batch_too_large",
                           f"{len(items)} events in one request, at most {self.max_batch}")
        if not items:
            raise ApiError(422, "empty_batch", "no events in the request")
        accepted: list[tuple[EventType, Event]] = []
        rejected: list[dict[str, Any]] = []
        now = datetime.now(UTC).isoformat()
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                rejected.append({"index": n, "reason": "not_an_object",
                                 "detail": "an event must be a JSON object"})
                continue
            kind = item.get("type")
            if kind not in ("rating", "watch"):
                rejected.append({"index": n, "reason": "unknown_type", "detail":
                                 f"type must be 'rating' or 'watch', got {kind!r}"})
                continue
            data = {"event_id": str(uuid.uuid4()), "occurred_at": now, **item}
            try:
                event = parse_event(kind, json.dumps(data).encode())
            except InvalidEvent as exc:
                rejected.append({"index": n, "reason": exc.reason, "detail": exc.detail})
                metrics.EVENTS.labels(kind, "rejected").inc()
                continue
            accepted.append((kind, event))
        if not accepted:
            raise ApiError(422, "no_valid_events", f"all {len(items)} events were rejected; "
                           f"first: {rejected[0]['detail']}", extra={"rejected": rejected})
        self.send(accepted)
        for kind, _ in accepted:
            metrics.EVENTS.labels(kind, "accepted").inc()
        return {"accepted": [e.event_id for _, e in accepted], "rejected": rejected}

    def post_user_event(self, user_id: str, kind: EventType,
                        fields: dict[str, Any]) -> dict[str, Any]:
        """A rating or watch for one user; the movie must be known (model or catalog)."""
        model = self.model()
        movie_id = fields["movie_id"]
        if model.bundle.movies.get(movie_id) is None:
            self.movie(movie_id)  # 404 unless a catalog event introduced it
        item = {k: v for k, v in fields.items() if v is not None}
        return self.post_events([{"type": kind, "user_id": user_id, **item}])

    def send(self, events: list[tuple[EventType, Event]]) -> None:
        """Produce validated events; a 503 with Retry-After while the broker is away."""
        try:
            self.sender.send(events)
        except BrokerUnavailable as exc:
            for kind, _ in events:
                metrics.EVENTS.labels(kind, "broker_unavailable").inc()
            raise ApiError(503, "broker_unavailable", f"events not accepted, the broker is "
                           f"unreachable ({exc}); retry later, event ids make it safe",
                           {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None

    # -- admin ----------------------------------------------------------------------------

    def model_admin(self) -> dict[str, Any]:
        reg = self.holder.registry
        served = self.holder.model
        current = reg.current_version()
        versions = []
        for v in reversed(reg.versions()):
            try:
                m = reg.manifest(v)
            except Exception:  # noqa: BLE001 - a half-written version is listed, not fatal
                m = {}
            versions.append({"version": v, "current": v == current,
                             "created_at": m.get("created_at"), "metrics": m.get("metrics", {}),
                             "gate": m.get("gate"), "data_window": m.get("data_window")})
        return {"current_version": current,
                "served_version": served.version if served else None,
                "loaded_at": served.loaded_at if served else None,
                "blend_weights": served.weights.to_dict() if served else None,
                "versions": versions}

    def lag(self) -> dict[str, Any]:
        try:
            return self.state.lag()
        except StateUnavailable as exc:
            raise ApiError(503, "user_state_unavailable", f"Redis is unreachable: {exc}",
                           {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        model = self.holder.model
        checks: dict[str, Any] = {
            "model": {"ok": model is not None,
                      "version": model.version if model else None,
                      "detail": None if model else self.holder.last_error or "no model yet"},
            "redis": {"ok": self.state.ping()},
            "broker": {"ok": self.sender.reachable()},
            "checked_at": time.time(),
        }
        ok = all(c["ok"] for c in checks.values() if isinstance(c, dict))
        return ok, checks
