"""The whole stack from the command line: ``recsys up`` / ``status`` / ``down`` and ``recsys
demo``, as real processes (broker, Redis, worker, trainer, API, replay) on free ports.

Every test checks that nothing it started is left: each pid recorded in ``stack.json`` is
gone and each port is closed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from devstack import free_port
from devstack.process import port_accepts
from devstack.runfile import same_process
from recsys_cli.main import app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: a fast start: default blend weights, no retraining while a test runs
FAST = ["--no-fit-weights", "--rate", "1000", "--ready-timeout", "60"]


@pytest.fixture
def env(data_dir: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    out.update({"RECSYS_DATA_DIR": str(data_dir), "RECSYS_TRAIN_AFTER_EVENTS": "10000000",
                "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "160"})
    return out


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run"
    yield path
    _kill_leftovers(path)  # only if a test failed half-way


def recsys(args: list[str], env: dict[str, str], timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recsys_cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def stack_file(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "stack.json").read_text())
    return data


def processes(data: dict[str, Any]) -> list[tuple[str, int, int | None]]:
    """(name, pid, start ticks) of the supervisor and of every role."""
    sup = data["supervisor"]
    return [("supervisor", sup["pid"], sup.get("start_ticks")),
            *((r["name"], r["pid"], r.get("start_ticks")) for r in data["roles"] if r["pid"])]


def ports(data: dict[str, Any]) -> list[int]:
    return [r["port"] for r in data["roles"] if r.get("port")]


def assert_nothing_left(data: dict[str, Any]) -> None:
    alive = [(name, pid) for name, pid, ticks in processes(data) if same_process(pid, ticks)]
    assert not alive, f"still running: {alive}"
    open_ports = [p for p in ports(data) if port_accepts(p)]
    assert not open_ports, f"ports still open: {open_ports}"


def _kill_leftovers(run_dir: Path) -> None:
    try:
        data = stack_file(run_dir)
    except (OSError, ValueError):
        return
    for _, pid, ticks in processes(data):
        if same_process(pid, ticks):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def metric(url: str, name: str, **labels: str) -> float:
    from devstack.figures import scrape, total

    samples = scrape(url)
    return total(samples, name, **labels) if samples else 0.0


# ---------------------------------------------------------------- up, status, down


def test_up_serves_seeded_and_streamed_users_and_down_leaves_nothing(
        env: dict[str, str], run_dir: Path) -> None:
    api_port = free_port()
    started = recsys(["up", *FAST, "--api-port", str(api_port), "--run-dir", str(run_dir)],
                     env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"http://127.0.0.1:{api_port}/docs" in started.stdout
    data = stack_file(run_dir)
    assert data["state"] == "ready"
    names = [r["name"] for r in data["roles"]]
    assert names == ["kafka", "redis", "worker-1", "trainer", "api", "replay"]
    api = f"http://127.0.0.1:{api_port}"
    try:
        status = recsys(["status", "--run-dir", str(run_dir)], env, timeout=30)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("kafka", "redis", "worker-1", "trainer", "api"):
            row = next(line for line in status.stdout.splitlines()
                       if re.match(rf"│ {name}\s+│", line))
            assert " up " in row, status.stdout

        # a training-share user was seeded into Redis: the API knows their history
        seeded = httpx.get(f"{api}/v1/users/1", timeout=5)
        assert seeded.status_code == 200 and seeded.json()["history"], seeded.text

        # an event produced to Kafka goes through the worker into the API's answers
        user = f"stack-test-{uuid.uuid4().hex[:8]}"
        producer = KafkaProducer(bootstrap_servers=data["addresses"]["kafka"], acks="all")
        event = {"event_id": f"{user}-1", "user_id": user, "movie_id": "50", "rating": 5,
                 "occurred_at": "2024-01-01T00:00:00Z"}
        producer.send("ratings.v1", key=user.encode(), value=json.dumps(event).encode())
        producer.flush(timeout=10)
        producer.close()

        def profile() -> Any:
            response = httpx.get(f"{api}/v1/users/{user}", timeout=5)
            return response.status_code == 200 and response.json()
        shown = wait_for(profile, 45, f"the API to show {user}'s rating")
        assert [h["movie_id"] for h in shown["history"]] == ["50"]
        recs = httpx.get(f"{api}/v1/users/{user}/recommendations", timeout=5)
        assert recs.status_code == 200
        assert "50" not in [item["movie_id"] for item in recs.json()["items"]]
        worker_url = data["addresses"]["worker_metrics"][0]
        assert metric(worker_url, "recsys_stream_events_total", outcome="applied") >= 1
    finally:
        stopped = recsys(["down", "--run-dir", str(run_dir)], env, timeout=150)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert_nothing_left(stack_file(run_dir))
    assert stack_file(run_dir)["state"] == "stopped"
    assert recsys(["status", "--run-dir", str(run_dir)], env, timeout=30).returncode == 1


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("command", ["demo", "up"])
def test_a_role_that_cannot_start_stops_the_stack_with_its_log_tail(
        command: str, env: dict[str, str], run_dir: Path) -> None:
    bad = {**env, "RECSYS_STREAM_BATCH_SIZE": "0"}
    args = [command, *FAST, "--no-replay", "--api-port", str(free_port()),
            "--run-dir", str(run_dir)]
    if command == "demo":
        args.append("--no-live")

    result = recsys(args, bad, timeout=150)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "worker-1 exited before it was ready" in result.stderr
    assert "stream_batch_size" in result.stderr  # the tail of the worker's own log
    data = stack_file(run_dir)
    assert data["state"] == "failed"
    assert_nothing_left(data)


def test_demo_reports_a_role_that_dies_and_stops_the_rest(
        env: dict[str, str], run_dir: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "recsys_cli.main", "demo", "--no-live", *FAST, "--no-replay",
         "--api-port", str(free_port()), "--run-dir", str(run_dir)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run_dir / "stack.json").exists()
                 and stack_file(run_dir)["state"] in ("ready", "failed"), 90, "the stack")
        data = stack_file(run_dir)
        assert data["state"] == "ready"
        worker = next(r for r in data["roles"] if r["name"] == "worker-1")
        os.killpg(worker["pid"], signal.SIGKILL)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 1, out + err
    assert "worker-1 died" in err and "exit code -9" in err
    assert_nothing_left(stack_file(run_dir))


def test_demo_stops_everything_on_ctrl_c(env: dict[str, str], run_dir: Path) -> None:
    """The live demo with its output in a pipe (not a terminal): the phases and a status line
    every five seconds are printed as lines; Ctrl-C stops it all."""
    log = run_dir.parent / "demo-out.txt"
    with log.open("w") as out_file:
        demo = subprocess.Popen(
            [sys.executable, "-m", "recsys_cli.main", "demo", *FAST,
             "--api-port", str(free_port()), "--run-dir", str(run_dir)],
            cwd=ROOT, env=env, stdout=out_file, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run_dir / "stack.json").exists()
                 and stack_file(run_dir)["state"] in ("ready", "failed"), 90, "the stack")
        assert stack_file(run_dir)["state"] == "ready"
        wait_for(lambda: "ready: applied" in log.read_text(), 30, "a status line")
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    out = log.read_text()
    assert demo.returncode == 0, out + err
    assert "training model version 1" in out and "stopping:" in out
    assert "every process of the stack has exited" in out
    data = stack_file(run_dir)
    assert data["state"] == "stopped"
    assert [r["name"] for r in data["roles"]][-1] == "replay"
    assert_nothing_left(data)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--train-fraction", "1.5"], 2, "--train-fraction"),
    (["--train-fraction", "0"], 2, "--train-fraction"),
    (["--rate", "0"], 2, "--rate"),
    (["--workers", "0"], 2, "--workers"),
    (["--dataset", "no-such-dataset"], 1, "'no-such-dataset' not found"),
])
@pytest.mark.parametrize("command", ["demo", "up"])
def test_bad_options_are_refused_before_anything_starts(
        command: str, args: list[str], code: int, message: str, tmp_path: Path,
        data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, [command, *args, "--api-port", str(free_port()),
                                      "--data-dir", str(data_dir), "--run-dir", str(run_dir)])
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
    assert not run_dir.exists()


def test_a_taken_api_port_names_the_option(tmp_path: Path, data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["demo", "--api-port", str(port), "--data-dir",
                                          str(data_dir), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert f"port {port}" in result.output and "--api-port" in result.output


def test_a_directory_with_foreign_files_is_left_alone(tmp_path: Path, data_dir: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["up", "--api-port", str(free_port()), "--data-dir",
                                      str(data_dir), "--run-dir", str(foreign)])
    assert result.exit_code == 1
    assert "did not write" in " ".join(result.output.split())
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_running_stack_is_not_started_twice(tmp_path: Path, data_dir: Path) -> None:
    from devstack.runfile import RunDir, start_ticks

    supervisor = subprocess.Popen(["sleep", "60"])  # stands for a live supervisor
    try:
        RunDir.at(tmp_path).write({"state": "ready", "roles": [], "supervisor": {
            "pid": supervisor.pid, "start_ticks": start_ticks(supervisor.pid)}})
        result = CliRunner().invoke(app, ["up", "--api-port", str(free_port()), "--data-dir",
                                          str(data_dir), "--run-dir", str(tmp_path)])
    finally:
        supervisor.kill()
        supervisor.wait()
    assert result.exit_code == 1
    assert "already running" in result.output and "recsys down" in result.output


def test_leftovers_of_a_dead_supervisor_are_found_and_stopped_by_down(
        tmp_path: Path, data_dir: Path) -> None:
    from devstack.runfile import RunDir, start_ticks

    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a role left behind
    try:
        RunDir.at(tmp_path).write({"state": "ready", "supervisor": {"pid": 2 ** 22 + 1},
                                   "roles": [{"name": "api", "pid": orphan.pid,
                                              "start_ticks": start_ticks(orphan.pid)}]})
        refused = CliRunner().invoke(app, ["demo", "--api-port", str(free_port()),
                                           "--data-dir", str(data_dir), "--run-dir",
                                           str(tmp_path)])
        assert refused.exit_code == 1
        assert "still running: api" in " ".join(refused.output.split())
        down = CliRunner().invoke(app, ["down", "--run-dir", str(tmp_path)])
        assert down.exit_code == 0 and "api" in down.output
        assert orphan.wait(timeout=10) == -signal.SIGTERM
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_down_and_status_without_a_stack(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["down", "--run-dir", str(tmp_path)]).exit_code == 0
    status = runner.invoke(app, ["status", "--run-dir", str(tmp_path)])
    assert status.exit_code == 1 and "no stack" in status.output


def test_external_without_addresses_names_the_variables(tmp_path: Path, data_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["up", "--external", "--api-port", str(free_port()), "--data-dir", str(data_dir),
              "--run-dir", str(tmp_path / "run")],
        env={"RECSYS_KAFKA_BOOTSTRAP": "", "RECSYS_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 1
    assert "--external needs RECSYS_KAFKA_BOOTSTRAP" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()
