"""The API as ``python -m serving`` runs it with ``RECSYS_API_PROCESSES=2``: two processes
on one port, and ``/metrics`` (and the operator page's ``/v1/admin/metrics``) the sum over
both, whichever process answers the scrape, never going backwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from stream_harness import create_topics, new_name, shared_model_dir

from devstack import DevStack, free_port
from recsys_core.dataset import Dataset
from serving.promtext import read_samples
from serving.settings import ServingSettings

pytestmark = pytest.mark.integration

ROUTE = "/healthz"


def workers(pid: int) -> list[int]:
    """The API processes uvicorn started under ``pid`` (not multiprocessing's tracker)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset, devstack: DevStack
        ) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    model_dir = shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)
    name = new_name("procs")
    create_topics(ServingSettings(kafka_bootstrap=devstack.kafka_bootstrap,
                                  redis_url=devstack.redis_url, model_dir=model_dir,
                                  key_prefix=name, topic_prefix=f"{name}."))
    port = free_port()
    samples = tmp_path_factory.mktemp("api-metrics")
    env = {**os.environ, "RECSYS_KAFKA_BOOTSTRAP": devstack.kafka_bootstrap,
           "RECSYS_REDIS_URL": devstack.redis_url, "RECSYS_MODEL_DIR": str(model_dir),
           "RECSYS_KEY_PREFIX": name, "RECSYS_TOPIC_PREFIX": f"{name}.",
           "RECSYS_API_HOST": "127.0.0.1", "RECSYS_API_PORT": str(port),
           "RECSYS_API_PROCESSES": "2", "PROMETHEUS_MULTIPROC_DIR": str(samples)}
    log = (tmp_path_factory.getbasetemp() / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "serving"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            assert proc.poll() is None, "the API exited"
            assert time.monotonic() < deadline, "the API did not become ready"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield base, samples, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def served(text: str, route: str = ROUTE) -> float:
    return sum(v for _, name, labels, v in read_samples(text)
               if name == "recsys_api_request_seconds_count" and labels.get("route") == route
               and labels.get("status") == "200")


def test_two_processes_share_the_port_and_their_counters_add_up(
        api: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    base, samples, proc = api
    assert len(workers(proc.pid)) == 2, "two API processes under the supervisor"
    before = served(httpx.get(f"{base}/metrics").text)
    seen = [before]
    sent = 0
    for _ in range(10):
        for _ in range(30):  # a new connection each: the kernel spreads them over both
            with httpx.Client() as client:
                assert client.get(f"{base}{ROUTE}").status_code == 200
            sent += 1
        seen.append(served(httpx.get(f"{base}/metrics").text))
    # counted once the response is sent: the last few may lag a moment
    deadline = time.monotonic() + 5
    while served(httpx.get(f"{base}/metrics").text) < before + sent:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    total = served(httpx.get(f"{base}/metrics").text)
    seen.append(total)
    assert total == before + sent
    assert seen == sorted(seen), f"a counter went backwards between scrapes: {seen}"
    # both processes answered (each writes its own sample file)
    pids = {p.stem.rsplit("_", 1)[1] for p in samples.glob("histogram_*.db")}
    assert len(pids) >= 2, pids
    # the operator page reads the same sum
    ops = httpx.get(f"{base}/v1/admin/metrics").json()
    on_page = sum(s["value"] for s in ops["samples"]
                  if s["name"] == "recsys_api_request_seconds_count"
                  and s["labels"].get("route") == ROUTE and s["labels"].get("status") == "200")
    assert on_page >= total
    gauges = [s for s in ops["samples"] if s["name"] == "recsys_api_model_version"]
    assert len(gauges) == 1 and gauges[0]["value"] >= 1, gauges
