"""A worker's health (streams.health): consuming and applying, served on /healthz."""

from __future__ import annotations

import json
import time
import urllib.request

from devstack import free_port
from streams.health import WorkerHealth, probe, serve


def test_healthy_while_nothing_waits_or_events_are_applied() -> None:
    h = WorkerHealth(stall_seconds=0.05)
    h.tick({"ratings.v1:0": 0})
    time.sleep(0.1)
    assert h.status()[0]  # idle, nothing waiting
    h.tick({"ratings.v1:0": 5})
    h.applied()
    assert h.status()[0]


def test_unhealthy_when_events_wait_and_nothing_is_applied() -> None:
    h = WorkerHealth(stall_seconds=0.05)
    h.applied()
    h.tick({"ratings.v1:0": 12, "ratings.v1:1": 3})
    time.sleep(0.1)
    ok, body = h.status()
    assert not ok and body["lag"] == 15
    assert "15 events waiting" in body["problems"][0]
    h.applied()
    assert h.status()[0]


def test_unhealthy_while_batches_keep_failing() -> None:
    h = WorkerHealth(stall_seconds=0.05)
    h.tick({})
    h.failing("process: OutOfMemoryError: OOM command not allowed")
    assert h.status()[0]  # not yet for long
    time.sleep(0.1)
    ok, body = h.status()
    assert not ok and "OutOfMemoryError" in body["problems"][0]


def test_healthz_answers_200_or_503_next_to_the_metrics() -> None:
    h = WorkerHealth(stall_seconds=0.05)
    h.tick({"ratings.v1:0": 0})
    port = free_port()
    serve(port, h, addr="127.0.0.1")
    ok, body = probe(port)
    assert ok and json.loads(body)["status"] == "ok"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=4) as r:
        assert r.status == 200 and b"# HELP" in r.read()
    h.tick({"ratings.v1:0": 7})
    time.sleep(0.1)
    ok, body = probe(port)
    assert not ok and json.loads(body)["status"] == "unhealthy"
