"""What guards the API before any route runs (pure ASGI, nothing parsed yet):

- :class:`KeyGate`: the API key of the route's role, checked from the headers alone, before
  the body is read. Three roles: ``events`` (POST events, ratings, watches), ``admin``
  (``/v1/admin/*``) and ``read`` (every other ``/v1`` route, keyed only with
  ``RECSYS_API_READ_KEY_REQUIRED``). ``RECSYS_API_EVENTS_KEY`` opens events (and reads),
  ``RECSYS_API_ADMIN_KEY`` opens admin (and reads), ``RECSYS_API_KEY`` opens all three
  (one key for everything, as before the split). A role with no key configured is open.
- Failed key attempts are counted per client address: past ``RECSYS_API_KEY_FAILURE_LIMIT``
  in ``RECSYS_API_KEY_FAILURE_WINDOW_SECONDS`` the address gets 429 with ``Retry-After`` on
  keyed routes until the window ends, and it is logged once per window.
- :class:`BodyLimit`: a body over ``RECSYS_API_MAX_BODY_BYTES`` is refused with 413 from its
  ``Content-Length`` before anything is read, or as soon as a chunked body passes the
  limit; a body that trickles in slower than ``RECSYS_API_BODY_TIMEOUT_SECONDS`` gets 408.
- :class:`PageHeaders`: a Content-Security-Policy and ``X-Frame-Options: DENY`` on the web
  pages and their files; ``X-Content-Type-Options: nosniff`` on every answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Depends
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import schemas
from serving.service import ApiError
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

Role = Literal["events", "admin", "read"]
#: shorter keys are warned about at start
MIN_KEY_LENGTH = 16
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
EVENT_PATH = re.compile(r"/v1/events|/v1/users/[^/]+/(ratings|watches)")
CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
PAGES = re.compile(r"/|/ops|/static/.*")


def error_body(status: int, error: str, detail: str,
               headers: dict[str, str] | None = None) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": error, "detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return head, body


async def send_error(send: Send, status: int, error: str, detail: str,
                     headers: dict[str, str] | None = None) -> None:
    head, body = error_body(status, error, detail, headers)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


@dataclass
class KeyPolicy:
    """Which keys open which role (see the module docstring)."""

    events: tuple[bytes, ...]
    admin: tuple[bytes, ...]
    reads_keyed: bool

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> KeyPolicy:
        both = [settings.api_key] if settings.api_key else []
        events = tuple(k.encode() for k in [*both, settings.api_events_key] if k)
        admin = tuple(k.encode() for k in [*both, settings.api_admin_key] if k)
        return cls(events, admin, settings.api_read_key_required)

    def keys(self, role: Role) -> tuple[bytes, ...]:
        if role == "read":
            return (self.events + self.admin) if self.reads_keyed else ()
        return self.events if role == "events" else self.admin

    def keyed(self, role: Role) -> bool:
        return bool(self.keys(role))

    def check(self, role: Role, given: bytes | None) -> tuple[int, str, str] | None:
        """None when ``given`` opens ``role``, else (status, error, detail)."""
        keys = self.keys(role)
        if not keys:
            return None
        if not given:
            return 401, "missing_api_key", "send the API key in the X-API-Key header"
        # compare with every key (no early exit: the time says nothing of which matched)
        ok = [secrets.compare_digest(given, k) for k in keys]
        if any(ok):
            return None
        return 403, "wrong_api_key", f"the X-API-Key header does not open {role} routes"


def role_of(method: str, path: str) -> Role | None:
    if path.startswith("/v1/admin/"):
        return "admin"
    if (method == "POST" and EVENT_PATH.fullmatch(path)) or (
            method in WRITE_METHODS and path.startswith("/v1/users/")):
        return "events"  # every write of a user's own data (events, follows, feedback)
    if path.startswith("/v1/"):
        return "read"
    return None


@dataclass
class FailedKeys:
    """Failed key attempts per client address in fixed windows."""

    limit: int
    window: float
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, tuple[float, int, bool]] = field(default_factory=dict)

    def blocked_for(self, address: str) -> float:
        """Seconds the address is still refused (0: not blocked)."""
        entry = self._windows.get(address)
        if not self.limit or entry is None:
            return 0.0
        left = entry[0] + self.window - self.clock()
        return left if left > 0 and entry[1] >= self.limit else 0.0

    def failed(self, address: str) -> None:
        now = self.clock()
        start, count, logged = self._windows.get(address, (now, 0, False))
        if now - start >= self.window:
            start, count, logged = now, 0, False
        count += 1
        if count >= self.limit and not logged:
            logged = True
            log.warning("%d failed API key attempts from %s within %.0f s: keyed routes "
                        "answer 429 to it until the window ends", count, address, self.window)
        self._windows[address] = (start, count, logged)
        if len(self._windows) > 100_000:  # forget finished windows
            self._windows = {a: e for a, e in self._windows.items()
                             if now - e[0] < self.window}


class KeyGate:
    def __init__(self, app: ASGIApp, policy: KeyPolicy, failures: FailedKeys) -> None:
        self.app = app
        self.policy = policy
        self.failures = failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        role = role_of(scope.get("method", ""), scope["path"]) if scope["type"] == "http" \
            else None
        if role is None or not self.policy.keyed(role):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        blocked = self.failures.blocked_for(address)
        if blocked:
            await send_error(send, 429, "too_many_key_failures",
                             "too many wrong or missing API keys from this address; retry "
                             "after the window ends", {"Retry-After": str(int(blocked) + 1)})
            return
        given = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
        refused = self.policy.check(role, given)
        if refused is not None:
            self.failures.failed(address)
            await send_error(send, *refused)
            return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit} bytes")


class BodyTooSlow(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await send_error(send, 413, "body_too_large", f"the request body is over "
                             f"{self.limit} bytes (RECSYS_API_MAX_BODY_BYTES)")
            return
        seen = 0
        deadline = time.monotonic() + self.timeout

        async def limited() -> Message:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTooSlow(self.timeout) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


class PageHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = PAGES.fullmatch(scope["path"]) is not None

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if page:
                    headers += [(b"content-security-policy", CSP.encode()),
                                (b"x-frame-options", b"DENY"),
                                (b"referrer-policy", b"no-referrer")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


ROLES: tuple[Role, Role, Role] = ("read", "events", "admin")
ERROR_TEXT = {
    400: "Malformed request", 401: "API key missing", 403: "Wrong API key",
    404: "Unknown movie or user", 408: "The body arrived too slowly",
    413: "Body over RECSYS_API_MAX_BODY_BYTES, or too many events in one request",
    422: "Invalid parameters", 429: "Too many failed API key attempts (see Retry-After)",
    503: "Model not loaded or a dependency down (see Retry-After)",
}


def errors_of(policy: KeyPolicy, role: Role) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route of ``role`` can answer, as OpenAPI responses."""
    codes = [400, 404, 422, 503]
    if policy.keyed(role):
        codes += [401, 403, 429]
    if role == "events":
        codes += [408, 413]
    return {c: {"model": schemas.Problem, "description": ERROR_TEXT[c]} for c in sorted(codes)}


def key_dependencies(policy: KeyPolicy, role: Role) -> list[Any]:
    """The key of ``role`` declared in OpenAPI and checked, or nothing when it is open."""
    if not policy.keyed(role):
        return []
    header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name=f"{role}_key",
                          description=ROLE_KEYS[role])

    # a default, not Annotated: the annotation string could not see this local variable
    async def check(key: str | None = Depends(header)) -> None:  # noqa: B008
        refused = policy.check(role, key.encode() if key else None)
        if refused is not None:
            raise ApiError(*refused)

    return [Depends(check)]


ROLE_KEYS = {
    "read": "RECSYS_API_EVENTS_KEY, RECSYS_API_ADMIN_KEY or RECSYS_API_KEY (reads are keyed: "
            "RECSYS_API_READ_KEY_REQUIRED)",
    "events": "RECSYS_API_EVENTS_KEY or RECSYS_API_KEY",
    "admin": "RECSYS_API_ADMIN_KEY or RECSYS_API_KEY",
}


def warn_about_keys(settings: ServingSettings) -> None:
    """At start: open roles, and keys too short to resist guessing."""
    policy = KeyPolicy.from_settings(settings)
    if not policy.keyed("events") or not policy.keyed("admin"):
        open_roles = [r for r in ("events", "admin") if not policy.keyed(r)]  # type: ignore
        log.warning("no API key for %s routes (RECSYS_API_KEY, RECSYS_API_EVENTS_KEY, "
                    "RECSYS_API_ADMIN_KEY): they are open (development only)",
                    " and ".join(open_roles))
    for name in ("api_key", "api_events_key", "api_admin_key"):
        value = getattr(settings, name)
        if value and len(value) < MIN_KEY_LENGTH:
            log.warning("RECSYS_%s is %d characters long: use at least %d random ones",
                        name.upper(), len(value), MIN_KEY_LENGTH)


def http_error_code(status: int) -> str:
    """The ``error`` code of an HTTP error raised by the framework itself."""
    codes: dict[int, str] = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                             408: "body_too_slow", 413: "body_too_large",
                             415: "unsupported_media_type"}
    return codes.get(status, f"http_{status}")


