"""What guards the API before a route runs, against a real uvicorn on a loopback port (raw
sockets where a client library would not send what an attacker sends): the body limit, the
key checked before the body is read, failed keys rate-limited, separate event and admin
keys, the pages' security headers, the error body of the framework's own errors."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from stream_harness import create_topics, new_name, shared_model_dir

from devstack import DevStack, free_port
from recsys_core.dataset import Dataset
from serving.__main__ import uvicorn_options
from serving.app import create_app
from serving.settings import ServingSettings

pytestmark = pytest.mark.integration

EVENTS_KEY = "events-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


def settings_for(devstack: DevStack, model_dir: Path, **extra: Any) -> ServingSettings:
    name = new_name("guard")
    settings = ServingSettings(kafka_bootstrap=devstack.kafka_bootstrap,
                               redis_url=devstack.redis_url, model_dir=model_dir,
                               key_prefix=name, topic_prefix=f"{name}.", **extra)
    create_topics(settings)
    return settings


@pytest.fixture(scope="module")
def server(devstack: DevStack, model_dir: Path) -> Iterator[tuple[str, int]]:
    """The API under uvicorn as ``python -m serving`` runs it, with small limits."""
    settings = settings_for(devstack, model_dir, api_events_key=EVENTS_KEY,
                            api_admin_key=ADMIN_KEY, api_max_body_bytes=64 * 1024,
                            api_body_timeout_seconds=1.0, api_timeout_keep_alive=1,
                            api_port=free_port())
    options = uvicorn_options(settings)
    uv = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield options["host"], options["port"]
    uv.should_exit = True
    thread.join(10)


def exchange(addr: tuple[str, int], head: bytes, body: bytes = b"",
             timeout: float = 5.0) -> tuple[int, dict[str, str], bytes, float]:
    """Send ``head`` (and ``body``) on a new connection; the status, headers, body of the
    answer and the seconds it took, reading until the server closes or the body is whole."""
    started = time.monotonic()
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        top, _, rest = data.partition(b"\r\n\r\n")
        lines = top.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        want = int(headers.get("content-length", "0"))
        while len(rest) < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(lines[0].split()[1]), headers, rest, time.monotonic() - started


def post_head(path: str, length: int | None, key: str | None = None,
              chunked: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    if key:
        lines.append(f"X-API-Key: {key}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_huge_body_without_a_key_is_refused_before_it_is_read(
        server: tuple[str, int]) -> None:
    # 54 MB announced, not one byte of it sent: the answer comes from the headers alone
    status, _, body, took = exchange(server, post_head("/v1/events", 54_000_000))
    assert status == 401 and json.loads(body)["error"] == "missing_api_key"
    assert took < 2.0
    status, _, body, _ = exchange(server, post_head("/v1/events", 54_000_000, "wrong-key"))
    assert status == 403 and json.loads(body)["error"] == "wrong_api_key"


def test_a_body_over_the_limit_gets_413_before_it_is_read(server: tuple[str, int]) -> None:
    status, _, body, took = exchange(server, post_head("/v1/events", 54_000_000, EVENTS_KEY))
    assert status == 413, body
    assert json.loads(body)["error"] == "body_too_large" and json.loads(body)["detail"]
    assert took < 2.0
    # chunked: refused once past the limit
    chunk = b"x" * 16384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    status, _, body, _ = exchange(server, post_head("/v1/users/u1/ratings", None, EVENTS_KEY,
                                                    chunked=True), chunks)
    assert status == 413 and json.loads(body)["error"] == "body_too_large"


def test_a_body_that_trickles_in_gets_408(server: tuple[str, int]) -> None:
    status, _, body, took = exchange(server, post_head("/v1/events", 100, EVENTS_KEY), b"{")
    assert status == 408 and json.loads(body)["error"] == "body_too_slow"
    assert 0.9 < took < 4.0


def test_an_idle_keep_alive_connection_is_closed(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server, not by our timeout
        assert time.monotonic() - started < 4.0


def test_event_and_admin_keys_are_separate_and_the_old_key_opens_both(
        devstack: DevStack, model_dir: Path) -> None:
    event = {"events": [{"type": "rating", "user_id": "1", "movie_id": "50", "rating": 3}]}
    settings = settings_for(devstack, model_dir, api_events_key=EVENTS_KEY,
                            api_admin_key=ADMIN_KEY)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/events", json=event,
                      headers={"X-API-Key": EVENTS_KEY}).status_code == 202
        assert c.post("/v1/events", json=event,
                      headers={"X-API-Key": ADMIN_KEY}).status_code == 403
        assert c.get("/v1/admin/model", headers={"X-API-Key": EVENTS_KEY}).status_code == 403
        assert c.get("/v1/admin/metrics", headers={"X-API-Key": EVENTS_KEY}).status_code == 403
        assert c.get("/v1/admin/model", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
        assert c.get("/v1/admin/metrics", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
        assert c.get("/v1/users/1").status_code in (200, 404)  # reads are open
    both = "one-key-for-both-0123456789"
    settings = settings_for(devstack, model_dir, api_key=both, api_read_key_required=True)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/events", json=event, headers={"X-API-Key": both}).status_code == 202
        assert c.get("/v1/admin/lag", headers={"X-API-Key": both}).status_code == 200
        for path in ("/v1/users/1", "/v1/users/1/recommendations", "/v1/movies/50"):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"] == "missing_api_key", path
        # the server-sent events stream too (checked before the stream opens)
        r = c.get("/v1/users/1/updates")
        assert r.status_code == 401 and r.json()["error"] == "missing_api_key"
        assert c.get("/v1/users/1/recommendations",
                     headers={"X-API-Key": both}).status_code == 200


def test_reads_keyed_accept_the_events_key_the_page_holds(
        devstack: DevStack, model_dir: Path) -> None:
    settings = settings_for(devstack, model_dir, api_events_key=EVENTS_KEY,
                            api_admin_key=ADMIN_KEY, api_read_key_required=True)
    with TestClient(create_app(settings)) as c:
        for key in (EVENTS_KEY, ADMIN_KEY):
            r = c.get("/v1/users/1/recommendations", headers={"X-API-Key": key})
            assert r.status_code == 200, r.text
        assert c.get("/v1/users/1/recommendations",
                     headers={"X-API-Key": "nope"}).status_code == 403
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200


def test_failed_keys_are_rate_limited_per_address_and_logged_once(
        devstack: DevStack, model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(devstack, model_dir, api_events_key=EVENTS_KEY,
                            api_key_failure_limit=3, api_key_failure_window_seconds=30)
    event = {"events": [{"type": "rating", "user_id": "1", "movie_id": "50", "rating": 3}]}
    with caplog.at_level(logging.WARNING, "serving.security"), \
            TestClient(create_app(settings)) as c:
        for _ in range(3):
            assert c.post("/v1/events", json=event,
                          headers={"X-API-Key": "guess"}).status_code == 403
        for key in ("guess", EVENTS_KEY, None):  # blocked, even with the right key
            r = c.post("/v1/events", json=event, headers={"X-API-Key": key} if key else {})
            assert r.status_code == 429, r.text
            assert r.json()["error"] == "too_many_key_failures"
            assert 0 < int(r.headers["Retry-After"]) <= 31
        assert c.get("/v1/movies/50").status_code == 200  # open reads are not blocked
    logged = [r for r in caplog.records if "failed API key attempts" in r.getMessage()]
    assert len(logged) == 1 and "testclient" in logged[0].getMessage()


def test_a_short_key_is_warned_about_at_start(devstack: DevStack, model_dir: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "serving.security"):
        create_app(settings_for(devstack, model_dir, api_key="s3cret"))
    assert any("RECSYS_API_KEY is 6 characters" in r.getMessage() for r in caplog.records)
    assert not any("s3cret" in r.getMessage() for r in caplog.records)


def test_pages_carry_a_csp_and_frame_options_and_framework_errors_the_error_body(
        devstack: DevStack, model_dir: Path) -> None:
    with TestClient(create_app(settings_for(devstack, model_dir))) as c:
        for path in ("/", "/ops", "/static/app.js"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert "default-src 'self'" in r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert r.headers["x-frame-options"] == "DENY"
        api = c.get("/v1/movies/50")
        assert api.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in api.headers
        for r, status, error in (
            (c.get("/no/such/page"), 404, "not_found"),
            (c.delete("/v1/events"), 405, "method_not_allowed"),
            (c.post("/v1/events", content=b"\xff\xfe{", headers={
                "content-type": "application/json"}), 400, "malformed_json"),
        ):
            assert r.status_code == status, r.text
            assert set(r.json()) == {"error", "detail"} and r.json()["error"] == error


def test_openapi_declares_a_key_only_where_one_is_needed(
        devstack: DevStack, model_dir: Path) -> None:
    def security(settings: ServingSettings) -> dict[tuple[str, str], list[str]]:
        spec = create_app(settings).openapi()
        return {(path, method): [name for req in op.get("security", []) for name in req]
                for path, ops in spec["paths"].items() for method, op in ops.items()}

    open_api = security(settings_for(devstack, model_dir))
    assert not any(open_api.values())
    keyed = security(settings_for(devstack, model_dir, api_events_key=EVENTS_KEY,
                                  api_admin_key=ADMIN_KEY))
    assert keyed[("/v1/events", "post")] == ["events_key"]
    assert keyed[("/v1/admin/model", "get")] == ["admin_key"]
    assert keyed[("/v1/admin/metrics", "get")] == ["admin_key"]
    assert keyed[("/v1/users/{user_id}/recommendations", "get")] == []
    reads = security(settings_for(devstack, model_dir, api_key=EVENTS_KEY,
                                  api_read_key_required=True))
    assert reads[("/v1/users/{user_id}/recommendations", "get")] == ["read_key"]
    assert reads[("/v1/users/{user_id}", "get")] == ["read_key"]
    assert reads[("/v1/users/{user_id}/updates", "get")] == ["read_key"]
