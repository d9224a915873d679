"""A worker's health: consuming and applying, not merely running.

The metrics port serves ``/metrics`` (Prometheus) and ``/healthz``: 200 with a JSON body
while the worker is healthy, 503 with the reasons when it is not:

- the event loop stopped reporting (the lag timer ticks every 5 s);
- events are waiting (lag) and nothing was applied for ``stall_seconds``;
- batches have kept failing (Redis, the dead-letter producer) for ``stall_seconds``.

``python -m streams.health [PORT]`` exits 0 when healthy, 1 otherwise (the container's
health check).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

TICK_SECONDS = 5.0


class WorkerHealth:
    def __init__(self, stall_seconds: float) -> None:
        self.stall = stall_seconds
        self.started = time.monotonic()
        self.last_tick: float | None = None
        self.last_applied: float | None = None
        self.lag: dict[str, int] = {}
        self.failing_since: float | None = None
        self.failure = ""
        self._lock = threading.Lock()

    def tick(self, lag: dict[str, int]) -> None:
        with self._lock:
            self.last_tick = time.monotonic()
            self.lag = dict(lag)

    def applied(self) -> None:
        with self._lock:
            self.last_applied = time.monotonic()
            self.failing_since = None
            self.failure = ""

    def failing(self, what: str) -> None:
        with self._lock:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            self.failure = what

    def status(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            problems = []
            since_tick = now - (self.last_tick if self.last_tick is not None else self.started)
            if since_tick > 3 * TICK_SECONDS + 5:
                problems.append(f"no lag report for {since_tick:.0f} s (event loop stalled)")
            waiting = sum(self.lag.values())
            since_applied = now - (self.last_applied if self.last_applied is not None
                                   else self.started)
            if waiting > 0 and since_applied > self.stall:
                problems.append(f"{waiting} events waiting and none applied for "
                                f"{since_applied:.0f} s")
            if self.failing_since is not None and now - self.failing_since > self.stall:
                problems.append(f"batches failing for {now - self.failing_since:.0f} s: "
                                f"{self.failure}")
            body = {
                "status": "unhealthy" if problems else "ok",
                "problems": problems,
                "lag": waiting,
                "partitions": len(self.lag),
                "seconds_since_applied": None if self.last_applied is None
                else round(now - self.last_applied, 1),
            }
        return not problems, body


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return None


def serve(port: int, health: WorkerHealth, addr: str = "0.0.0.0") -> None:
    """``/healthz`` and Prometheus's ``/metrics`` on ``port``, in a daemon thread."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, body = health.status()
            start("200 OK" if ok else "503 Service Unavailable",
                  [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        return metrics(environ, start)  # type: ignore[no-any-return]

    server = make_server(addr, port, app, server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()


def probe(port: int, host: str = "127.0.0.1", timeout: float = 4.0) -> tuple[bool, str]:
    """(healthy, the body) of a worker's ``/healthz``."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=timeout) as r:
            return True, r.read().decode()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode()
    except OSError as exc:
        return False, f"no answer: {exc}"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9101
    ok, body = probe(port)
    sys.stdout.write(body + "\n")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
