"""Pure ASGI middleware of the API (no per-request task or body copy): request metrics,
kept answers served before routing, and the error body every layer answers with."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import metrics


class MetricsMiddleware:
    """Request seconds by route template, method and status (pure ASGI: no per-request
    task or body copy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            metrics.REQUEST_SECONDS.labels(path, scope["method"], str(status)).observe(
                time.perf_counter() - start)


class KeptAnswers:
    """Serves a kept recommendations answer before routing and parameter parsing, which are
    most of a cache hit's time: an answer is kept only for a request that already passed
    them (the key holds the raw query string, the user's current state revision, the model
    version). ``lookup(user_id, query)`` returns the kept body or None; ``route()`` is the
    endpoint's route, for the request metrics' label."""

    PATH = re.compile(r"/v1/users/([^/]+)/recommendations")

    def __init__(self, app: ASGIApp, lookup: Callable[[str, bytes], bytes | None],
                 route: Callable[[], Any]) -> None:
        self.app = app
        self.lookup = lookup
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            m = self.PATH.fullmatch(scope["path"])
            body = self.lookup(m[1], scope["query_string"]) if m else None
            if body is not None:
                scope["route"] = self.route()
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def problem(status: int, error: str, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status,
                        headers=headers)
