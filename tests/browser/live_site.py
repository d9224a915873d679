"""The whole site for the browser tests: a real stream worker and the API under a real
uvicorn (``python -m serving``) on a free loopback port, on the same topics and Redis keys,
with the worker's ``/metrics`` as the API's metrics target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_harness import REPO_ROOT, Stack, WorkerProcess, make_stack, new_name, wait_for

from devstack import DevStack, free_port


@dataclass
class ApiProcess:
    """``python -m serving`` in its own process group, output in ``log_path``."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str

    def describe(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- api (pid {self.popen.pid}), {self.log_path} ---\n{tail}"

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)


@dataclass
class Site:
    stack: Stack
    worker: WorkerProcess
    api: ApiProcess
    api_env: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.api.base_url

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> Any:
        req = urllib.request.Request(self.base_url + path, headers=headers or {})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def logs(self) -> str:
        return self.stack.logs() + self.api.describe()

    @contextmanager
    def another_api(self, log_path: Path, **env: str) -> Iterator[ApiProcess]:
        """A second API process on the same topics and keys with ``env`` on top (e.g.
        ``RECSYS_API_KEY``), ready; stopped on exit."""
        api = start_api({**self.api_env, **env}, log_path)
        try:
            wait_for(lambda: wait_ready(api), 60, "the second API to be ready")
            yield api
        finally:
            api.stop()


def get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_ready(api: ApiProcess) -> bool:
    if api.popen.poll() is not None:
        raise AssertionError(f"the API exited {api.popen.returncode}{api.describe()}")
    return get_status(f"{api.base_url}/readyz") == 200


def start_api(env: dict[str, str], log_path: Path) -> ApiProcess:
    port = free_port()
    env = {**env, "RECSYS_API_HOST": "127.0.0.1", "RECSYS_API_PORT": str(port),
           "RECSYS_LOG_LEVEL": "warning"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen([sys.executable, "-m", "serving"], cwd=REPO_ROOT, env=env,
                                 stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
    return ApiProcess(popen, log_path, f"http://127.0.0.1:{port}")


@contextmanager
def running_site(devstack: DevStack, model_dir: Path, scratch: Path,
                 **api_env: str) -> Iterator[Site]:
    """A worker and the API, both ready (the worker has joined its group and reports
    metrics; the API answers ``/readyz``); stopped on exit."""
    name = new_name("web")
    stack = make_stack(devstack, name, model_dir, scratch)
    api: ApiProcess | None = None
    try:
        worker = stack.start_worker("web-worker", scratch)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")},
               **{k: v for k, v in stack.env.items() if k.startswith("RECSYS_")},
               "RECSYS_API_METRICS_TARGETS": f"http://127.0.0.1:{worker.metrics_port}/metrics",
               "RECSYS_API_MODEL_POLL_SECONDS": "1", **api_env}
        api = start_api(env, scratch / "api.log")
        started = time.monotonic()

        ratings = stack.topic("rating")

        def assigned() -> bool:
            """The worker reports lag for the ratings topic: it holds its partitions."""
            return any(name == "recsys_stream_consumer_lag" and dict(labels).get("topic")
                       == ratings for name, labels in worker.metrics())

        def ready() -> bool:
            return wait_ready(api) and assigned()  # type: ignore[arg-type]

        wait_for(ready, 60, "the API to be ready and the worker to hold its partitions",
                 stack.workers, describe=lambda: f"{time.monotonic() - started:.1f} s")
        yield Site(stack, worker, api, env)
    finally:
        if api is not None:
            api.stop()
        stack.stop_all()
        stack.client.close()
