"""The FastAPI application: ``/v1`` API, health, Prometheus metrics, and the web pages.

``create_app()`` is uvicorn's factory (``python -m serving``); tests pass their own settings.
The model loads in the lifespan and a background task swaps in each newly published version;
reads never wait on Redis longer than ``RECSYS_API_REDIS_TIMEOUT_SECONDS`` and answer from
the model alone when it is down; writes answer 503 with ``Retry-After`` when the broker is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import redis
from fastapi import Body, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys_core.activity import HOUR
from recsys_core.events import ID_PATTERN, MAX_ID_LENGTH
from serving import metrics, schemas
from serving.activity import follow_event_log
from serving.cache import Params, ResponseCache, no_state, params_key, query_key
from serving.middleware import KeptAnswers, MetricsMiddleware, problem
from serving.model import ModelHolder, ServingModel
from serving.producer import EventSender
from serving.security import (
    ROLES,
    BodyLimit,
    FailedKeys,
    KeyGate,
    KeyPolicy,
    PageHeaders,
    errors_of,
    http_error_code,
    key_dependencies,
    warn_about_keys,
)
from serving.service import RETRY_AFTER_SECONDS, ApiError, Service
from serving.settings import ServingSettings
from serving.social_routes import add_social_routes
from serving.state import StateReader, StateUnavailable
from serving.tracking import StateTracker
from serving.updates import UpdateHub

log = logging.getLogger(__name__)

#: how often the served top-10s (live HR@10) are written, all in one pipeline
SERVED_FLUSH_SECONDS = 0.05

ID_TEXT = ("1-128 ASCII letters, digits and . _ ~ : @ + -, not starting with a dot (the "
           "stream's grammar too)")
UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                             examples=["42"], description=f"The user's id: {ID_TEXT}")]
MovieId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                              examples=["50"], description=f"The movie's id: {ID_TEXT}")]
TAGS = [
    {"name": "recommendations", "description": "Personal top-k, each with a reason"},
    {"name": "movies", "description": "Catalogue, search and similar movies"},
    {"name": "events", "description": "Ratings and watches in; produced to Kafka"},
    {"name": "social", "description": "Follows, and what the people a user follows liked"},
    {"name": "admin", "description": "Model versions and stream lag (API key)"},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics"},
]


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    holder = ModelHolder(settings.model_dir, settings.api_candidate_threshold)
    state = StateReader(settings.redis_url, settings.keys, settings.api_redis_timeout_seconds,
                        cap=settings.user_history_cap)
    sender = EventSender(settings)
    service = Service(holder, state, sender, settings.api_max_batch)
    hub = UpdateHub(settings.redis_url, settings.keys.user_updates())
    # which users' cached answers are current, kept so by Redis invalidations
    tracker = StateTracker(settings.redis_url, settings.keys.meta("")[:-1],
                           settings.api_cache_size, settings.api_redis_timeout_seconds * 4)
    policy = KeyPolicy.from_settings(settings)
    warn_about_keys(settings)

    # the background loops end on this, not only on cancellation: a cancellation that lands
    # in a Redis call's own timeout can come out as a (caught) timeout error
    stopping = asyncio.Event()

    async def poll_models() -> None:
        while not stopping.is_set():
            await asyncio.sleep(settings.api_model_poll_seconds)
            try:
                if settings.api_cache_size:
                    await tracker.maintain()
                    await state.ensure_epoch()  # a flush or an empty restart drops the cache
                await asyncio.to_thread(holder.refresh)
                await asyncio.to_thread(service.refresh_new_movies)
                await asyncio.to_thread(service.warm_activity)
            except Exception:  # noqa: BLE001 - a bad version must not stop the polling
                log.exception("model refresh failed")

    async def write_served() -> None:
        """The served top-10s, in one pipeline per SERVED_FLUSH_SECONDS."""
        while not stopping.is_set():
            await asyncio.sleep(SERVED_FLUSH_SECONDS)
            await state.flush_served()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(holder.refresh)
        if settings.api_cache_size:
            await tracker.maintain()
            await state.ensure_epoch()
        poller = asyncio.create_task(poll_models())
        writer = asyncio.create_task(write_served())
        follower = asyncio.create_task(follow_event_log(
            settings.redis_url, settings.keys.event_log(), service.activity))
        hub.start()
        try:
            yield
        finally:
            stopping.set()
            poller.cancel()
            follower.cancel()
            writer.cancel()
            await asyncio.wait({poller, writer}, timeout=5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.flush_served(), 2.0)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(follower, 2.0)
            tracker.close()
            await hub.stop()
            await asyncio.to_thread(sender.close)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.close(), 2.0)
            metrics.process_exit()

    # Swagger UI from the package's own files, not a CDN: /docs works offline (no ReDoc: its
    # page fetches a logo from its vendor's site)
    app = FastAPIOffline(
        static_url="/docs-static",
        redoc_url=None,
        title="recsys-stream",
        version="1",
        summary="Real-time movie recommendations: stored factors blended with the fresh "
                "session signal from the stream.",
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.hub = hub
    app.state.tracker = tracker
    # the first added runs last: kept answers only behind the key gate and the body limit
    if settings.api_cache_size:
        app.add_middleware(KeptAnswers, lookup=lambda user_id, query: kept(user_id, query),
                           route=lambda: recommendations_route)
    app.add_middleware(BodyLimit, limit=settings.api_max_body_bytes,
                       timeout=settings.api_body_timeout_seconds)
    app.add_middleware(KeyGate, policy=policy, failures=FailedKeys(
        settings.api_key_failure_limit, settings.api_key_failure_window_seconds))
    app.add_middleware(PageHeaders)
    app.add_middleware(MetricsMiddleware)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["X-API-Key",
                                                                         "Content-Type"])

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.error, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(redis.RedisError)
    @app.exception_handler(StateUnavailable)
    async def _state_error(request: Request, exc: Exception) -> JSONResponse:
        """Any Redis error a route did not turn into a fallback: the state store is
        unavailable, never a 500."""
        return problem(503, "user_state_unavailable", f"Redis is unavailable: "
                       f"{type(exc).__name__}", {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The framework's own errors (no route, wrong method, a body it cannot parse, the
        body limit) in the same {"error", "detail"} body."""
        code, detail = http_error_code(exc.status_code), str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:  # not UTF-8, say
            code, detail = "malformed_json", "the body could not be decoded as UTF-8 JSON"
        return problem(exc.status_code, code, detail, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", f"the request failed ({type(exc).__name__}); "
                       f"it is logged")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return problem(400, "malformed_json", f"the body is not valid JSON: "
                           f"{first.get('ctx', {}).get('error', first.get('msg'))}")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return problem(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}",
                       errors=[{"loc": list(e.get("loc", ())), "msg": e.get("msg")}
                               for e in errors])

    # the key gate checks every key before routing; these declare them in OpenAPI (only
    # where one is needed) and check again
    reads, writes, admin = (key_dependencies(policy, role) for role in ROLES)
    read_errors, write_errors, admin_errors = (errors_of(policy, role) for role in ROLES)
    cache = ResponseCache(settings.api_cache_size)

    def reset() -> None:
        """The Redis data set changed under us: no kept answer or revision is current."""
        cache.clear()
        tracker.forget()

    state.on_reset = reset

    # -- recommendations --------------------------------------------------------------------

    def answer_key(model: ServingModel, user_id: str, params: Params, rev: tuple[str, int]
                   ) -> tuple[Any, ...]:
        """The same user state (the data set's epoch and the user's revision in it; revision
        0: no stored state, one key for every such user), model, catalogue and question (the
        validated parameters, serving/cache.py)."""
        new = service.new_movies
        # a reranked answer also depends on the movie activity: keep it for the same hour
        # of event time only
        hour = (service.activity.for_bundle(model.bundle).now // HOUR
                if model.trees is not None else None)
        who = (user_id, rev) if rev[1] else ("cold-start",)
        return (*who, model.version, len(new), tuple(new.movie_ids[-1:]), params, hour)

    def kept(user_id: str, query: bytes) -> bytes | None:
        """The kept answer of a user whose current revision is known without a round trip
        (Redis invalidates it on every change), or None."""
        model = holder.model
        if model is None or not cache.size:
            return None
        known = tracker.known(settings.keys.meta(user_id))
        if known is None:
            return None
        params = query_key(query, model.surfaces, model.default_surface)
        if params is None:
            return None
        # a miss is counted by the request's own look after reading the state
        return cache.answer(answer_key(model, user_id, params, known), user_id, known[1],
                            count_miss=False)

    @app.get("/v1/users/{user_id}/recommendations", response_model=schemas.Recommendations,
             tags=["recommendations"], dependencies=reads, responses=read_errors)
    async def recommendations(
        request: Request,
        user_id: UserId,
        k: Annotated[int, Query(ge=1, le=100, description="How many movies")] = 10,
        genre: Annotated[list[str] | None, Query(
            description="Only these genres (any of; repeat the parameter)",
            max_length=32)] = None,
        year_min: Annotated[int | None, Query(ge=1870, le=2100)] = None,
        year_max: Annotated[int | None, Query(ge=1870, le=2100)] = None,
        exclude_seen: Annotated[bool, Query(description="Leave out movies the user "
                                            "already rated or watched")] = True,
        exclude: Annotated[list[str] | None, Query(description="Movie ids to leave out",
                                                   max_length=1000)] = None,
        surface: Annotated[schemas.SurfaceName | None, Query(
            description="for_you (long-term taste) or up_next (the moment, reranked); "
                        "the model's default surface when left out")] = None,
    ) -> JSONResponse:
        """The user's top-k: ALS factors, item-to-item, the session signal, content and
        popularity blended with the surface's fitted weights; a reason per movie. A user
        with no history gets popular movies and ``fallback_reason: cold_start``."""
        model = service.model()
        params = params_key(k, genre or [], year_min, year_max, exclude_seen, exclude or [],
                            model.surface(surface)[0])  # KeptAnswers had no answer kept
        meta = settings.keys.meta(user_id)
        token = tracker.begin(meta) if cache.size else None
        snap, rev = None, None
        try:
            snap, epoch = await state.user_epoch_async(user_id, model.factors)
            if epoch is not None and (snap.rev > 0 or no_state(snap)):
                rev = (epoch, snap.rev)
        except StateUnavailable:
            pass
        finally:
            tracker.end(meta, token, rev)
        key = None
        if rev is not None:
            key = answer_key(model, user_id, params, rev)
            hit = cache.answer(key, user_id, rev[1])
            if hit is not None:
                return Response(hit, media_type="application/json")
        body, after = service.recommendations(model, snap, user_id, k, genre or [], year_min,
                                              year_max, exclude_seen, exclude or [], surface)
        # live HR@10 follows the default surface's answers (what an app shows first)
        if (snap is not None and k >= 10 and not (genre or year_min or year_max)
                and body["surface"] == model.default_surface):
            state.remember_served(user_id, [it["movie_id"] for it in body["items"][:10]])
        # the body is built to the schema already: skip re-validating it (the hot path)
        response = JSONResponse(body, background=BackgroundTask(after) if after else None)
        if key is not None and rev is not None:
            cache.keep(key, user_id, rev[1], bytes(response.body), body["fallback_reason"])
        return response

    recommendations_route = next(r for r in app.routes if getattr(r, "endpoint", None)
                                 is recommendations)

    @app.get("/v1/users/{user_id}/because-you-watched", tags=["recommendations"],
             dependencies=reads, responses=read_errors)
    async def because_you_watched(
        user_id: UserId, k: Annotated[int, Query(ge=1, le=50)] = 10,
    ) -> dict[str, Any]:
        """Movies like the user's most recent well-liked one, not yet seen."""
        model = service.model()
        snap = await service.snapshot_async(model, user_id)
        return service.because_you_watched(model, snap, user_id, k)

    @app.get("/v1/users/{user_id}/predicted-rating/{movie_id}",
             response_model=schemas.PredictedRating, tags=["recommendations"],
             dependencies=reads, responses=read_errors)
    async def predicted_rating(user_id: UserId, movie_id: MovieId) -> dict[str, Any]:
        """Stars the user would give (biased matrix factorisation, folded in from the user's
        ratings); a user without ratings gets the movie's baseline."""
        model = service.model()
        service.movie_index(model, movie_id)
        snap = await service.snapshot_async(model, user_id)
        return service.predicted_rating(model, snap, user_id, movie_id)

    @app.get("/v1/users/{user_id}", response_model=schemas.UserProfile,
             tags=["recommendations"], dependencies=reads, responses=read_errors)
    async def user_profile(user_id: UserId,
                           limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        """What the stream knows of a user: history (newest first) and affinities; 404 for
        a user with no events."""
        model = service.holder.model
        snap = await service.snapshot_async(model, user_id)
        return service.profile(model, snap, user_id, limit)

    @app.get("/v1/users/{user_id}/updates", tags=["recommendations"], dependencies=reads,
             response_class=StreamingResponse,
             responses={**read_errors, 200: {
                 "content": {"text/event-stream": {}}, "description": "Server-sent events: "
                 "`updated` each time the stream changes this user's state"}})
    async def user_updates(user_id: UserId) -> StreamingResponse:
        """Server-sent events announcing each change of the user's state."""
        return StreamingResponse(hub.listen(user_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    # -- movies -----------------------------------------------------------------------------

    @app.get("/v1/movies/search", response_model=schemas.SearchResults, tags=["movies"],
             dependencies=reads, responses=read_errors)
    def search(
        q: Annotated[str, Query(min_length=1, max_length=200, description="Title, typos "
                                "allowed", examples=["star wars"])],
        limit: Annotated[int, Query(ge=1, le=50)] = 10,
    ) -> dict[str, Any]:
        """Typo-tolerant title search (prefix and word matches first, then fuzzy)."""
        return service.search(q, limit)

    @app.get("/v1/genres", tags=["movies"], dependencies=reads, responses=read_errors)
    def genres() -> dict[str, Any]:
        """Every genre of the served model, for filters and browsing."""
        model = service.model()
        return {"model_version": model.version, "genres": model.genre_names}

    @app.get("/v1/movies/{movie_id}", response_model=schemas.Movie, tags=["movies"],
             dependencies=reads, responses=read_errors)
    def movie(movie_id: MovieId) -> dict[str, Any]:
        """Title, year, genres, people; also movies known only from a catalog event."""
        return service.movie(movie_id)

    @app.get("/v1/movies/{movie_id}/similar", response_model=schemas.SimilarMovies,
             tags=["movies"], dependencies=reads, responses=read_errors)
    def similar(
        movie_id: MovieId,
        by: Annotated[Literal["taste", "content"], Query(
            description="taste: watched together (item-to-item); content: metadata")] = "taste",
        k: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> dict[str, Any]:
        """Similar movies by taste or by content."""
        return service.similar(movie_id, by, k)

    # -- events -----------------------------------------------------------------------------

    @app.post("/v1/events", status_code=202, response_model=schemas.EventsAccepted,
              tags=["events"], dependencies=writes,
              responses=write_errors)
    def post_events(batch: schemas.EventBatch) -> dict[str, Any]:
        """Validate each event with the stream's schemas and produce the valid ones to
        Kafka (202 once the broker acknowledged them); invalid ones come back with their
        index and reason. ``event_id`` and ``occurred_at`` are filled in when absent."""
        return service.post_events(batch.events)

    @app.post("/v1/users/{user_id}/ratings", status_code=202,
              response_model=schemas.EventsAccepted, tags=["events"], dependencies=writes,
              responses=write_errors)
    def post_rating(user_id: UserId, rating: Annotated[schemas.RatingIn, Body()]
                    ) -> dict[str, Any]:
        """Rate a known movie (0.5-5 stars)."""
        return service.post_user_event(user_id, "rating", rating.model_dump())

    @app.post("/v1/users/{user_id}/watches", status_code=202,
              response_model=schemas.EventsAccepted, tags=["events"], dependencies=writes,
              responses=write_errors)
    def post_watch(user_id: UserId, watch: Annotated[schemas.WatchIn, Body()]
                   ) -> dict[str, Any]:
        """Mark a known movie watched (completion in [0, 1])."""
        return service.post_user_event(user_id, "watch", watch.model_dump())

    add_social_routes(app, service, settings, reads, writes, read_errors, write_errors)

    # -- admin and health -------------------------------------------------------------------

    @app.get("/v1/admin/model", response_model=schemas.ModelAdmin, tags=["admin"],
             dependencies=admin, responses=admin_errors)
    def admin_model() -> dict[str, Any]:
        """Current, served and kept model versions with their holdout metrics and gate."""
        return service.model_admin()

    @app.get("/v1/admin/lag", response_model=schemas.LagSummary, tags=["admin"],
             dependencies=admin, responses=admin_errors)
    def admin_lag() -> dict[str, Any]:
        """Consumer lag per topic-partition as the stream workers last reported it."""
        return service.lag()

    @app.get("/healthz", response_model=schemas.Health, tags=["health"])
    async def healthz() -> dict[str, Any]:
        """The process is up."""
        return {"status": "ok", "checks": {}}

    @app.get("/readyz", response_model=schemas.Health, tags=["health"],
             responses={503: {"model": schemas.Health}})
    async def readyz(response: Response) -> dict[str, Any]:
        """Model loaded, Redis and the broker reachable."""
        ok, checks = await asyncio.to_thread(service.readiness)
        if not ok:
            response.status_code = 503
        return {"status": "ok" if ok else "unavailable", "checks": checks}

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    from serving.web import mount_web  # the pages use the same app and settings

    mount_web(app, settings)
    return app

