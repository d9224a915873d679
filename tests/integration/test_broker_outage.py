"""The broker killed and started again on the same port: the API's event POST answers 503
with Retry-After while it is gone (never a 500), reads keep answering, and writes are taken
again once it is back. The slow test runs the whole broker-kill fault of
``benchmarks.faults`` (two worker processes, the API process, an outside producer, a broker
whose storage outlives it) and checks every event id."""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from stream_harness import new_name, shared_model_dir

from devstack import KafkaBroker, RedisServer, free_port
from recsys_core.dataset import Dataset
from serving.app import create_app
from serving.settings import ServingSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k: Dataset) -> Path:
    return shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)


def test_event_posts_answer_503_while_the_broker_is_killed_and_recover_on_restart(
    redis_server: RedisServer, model_dir: Path, tmp_path: Path
) -> None:
    broker = KafkaBroker(port=free_port(), log_dir=tmp_path).start()
    try:
        settings = ServingSettings(kafka_bootstrap=broker.bootstrap,
                                   redis_url=redis_server.url, model_dir=model_dir,
                                   key_prefix=new_name("bk"), topic_prefix=f"{new_name('bk')}.")
        body = {"events": [{"type": "rating", "user_id": "1", "movie_id": "50", "rating": 3}]}
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            assert c.post("/v1/events", json=body).status_code == 202
            assert broker.pid is not None
            os.killpg(broker.pid, signal.SIGKILL)  # no goodbye to the clients
            broker.stop()
            statuses = []
            for _ in range(6):
                r = c.post("/v1/events", json=body)
                statuses.append(r.status_code)
                if r.status_code == 503:
                    assert r.json()["error"] == "broker_unavailable", r.text
                    assert int(r.headers["Retry-After"]) > 0
                assert c.get("/v1/users/1/recommendations").status_code == 200
                time.sleep(0.3)
            assert set(statuses) == {503}, statuses
            broker.start()  # same port, an empty cluster (memory storage)
            deadline = time.monotonic() + 30
            while True:
                r = c.post("/v1/events", json=body)
                assert r.status_code in (202, 503), r.text
                if r.status_code == 202:
                    break
                assert time.monotonic() < deadline, "writes not taken again after 30 s"
                time.sleep(0.5)
            assert 'status="500"' not in c.get("/metrics").text
    finally:
        broker.stop()


@pytest.mark.slow
def test_broker_kill_with_two_workers_loses_and_doubles_nothing(tmp_path: Path) -> None:
    pytest.importorskip("moto.server")
    from benchmarks.faults import DurableRedis, run_scenario
    from benchmarks.harness import ROOT, publish_model
    from devstack.object_store import S3Store

    args = argparse.Namespace(events=3000, users=200, rate=300.0, tree=str(ROOT),
                              no_api=False, outage=20.0, log_level="warning")
    rds = DurableRedis(tmp_path)
    rds.start()
    try:
        publish_model(tmp_path / "models")
        with S3Store(log_dir=tmp_path / "s3") as store, KafkaBroker(
                port=free_port(), log_dir=tmp_path / "broker", storage=store) as broker:
            result = run_scenario("broker-kill", args, broker, rds, tmp_path / "models",
                                  tmp_path)
    finally:
        rds.stop()
    assert result["sent"] >= 3000 and result["api_posted"] > 0, result
    # what the broker acked and then did not have is the broker's loss, not the stream's
    assert result["lost_in_broker"] == 0, result
    assert result["lost"] == result["lost_by_broker"], result
    assert result["double_counted"] == 0 and result["rev_excess"] <= 0, result
    assert result["api_5xx"] == 0 and result["api_post_5xx"] == 0, result
    assert result["api_post_503"] > 0 and result["api_503_without_retry_after"] == 0, result
    assert result["stale_answers"] == 0, result
