"""A server child on a loopback port: start, wait until it answers, stop."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from devstack.process import DevStackError, ManagedProcess, free_port

logger = logging.getLogger(__name__)

DEFAULT_STARTUP_TIMEOUT = 30.0
_PORT_ATTEMPTS = 3
_ADDRESS_IN_USE = re.compile(r"address already in use|addrinuse|address in use", re.IGNORECASE)


class ServiceProcess(ABC):
    """A server child on a loopback port: start, wait until it answers, stop.

    ``port=None`` picks a free port and retries on another one if the port was
    taken in the meantime. ``log_dir=None`` uses a temporary run directory that
    ``stop()`` removes; a given ``log_dir`` is kept.
    """

    name: ClassVar[str] = "service"

    def __init__(
        self,
        *,
        port: int | None = None,
        log_dir: Path | str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        self._requested_port = port
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self.startup_timeout = startup_timeout
        self._run_dir: Path | None = None
        self._owns_run_dir = False
        self._process: ManagedProcess | None = None
        self._port: int | None = None
        self.startup_seconds: float | None = None

    @abstractmethod
    def _argv(self, port: int, run_dir: Path) -> list[str]:
        """The command line that runs the server on ``port``."""

    @abstractmethod
    def _probe(self, port: int, process: ManagedProcess) -> bool:
        """Whether the server on ``port`` answers; raise DevStackError if it is the wrong one."""

    def _env(self) -> dict[str, str] | None:
        return None

    @property
    def port(self) -> int:
        if self._port is None or not self.is_running():
            raise DevStackError(f"{self.name} is not running")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def run_dir(self) -> Path | None:
        return self._run_dir

    @property
    def log_path(self) -> Path | None:
        return self._process.log_path if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running()

    def start(self) -> Self:
        """Start the server and wait until it answers; a no-op if it is running."""
        if self.is_running():
            return self
        self.stop()
        run_dir = self._ensure_run_dir()
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port()
            process = ManagedProcess(
                self.name,
                self._argv(port, run_dir),
                run_dir / f"{self.name}-{port}.log",
                env=self._env(),
            )
            started = time.monotonic()
            process.start()
            self._process, self._port = process, port
            try:
                self._wait_ready(port, process)
            except BaseException as exc:
                process.stop()
                self._process = self._port = None
                retry = attempt < attempts and _ADDRESS_IN_USE.search(str(exc)) is not None
                if not retry or not isinstance(exc, DevStackError):
                    raise
                logger.warning("%s: port %d taken, retrying on another port", self.name, port)
                continue
            self.startup_seconds = time.monotonic() - started
            logger.info(
                "%s: ready on 127.0.0.1:%d (pid %s) in %.2f s",
                self.name,
                port,
                process.pid,
                self.startup_seconds,
            )
            return self
        raise DevStackError(f"{self.name}: no attempt to start succeeded")  # pragma: no cover

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL). Idempotent."""
        process, self._process, self._port = self._process, None, None
        if process is not None:
            process.stop()
            logger.info("%s: stopped pid %s", self.name, process.pid)
        if self._owns_run_dir and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir, self._owns_run_dir = None, False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _ensure_run_dir(self) -> Path:
        if self._run_dir is None:
            if self._log_dir is not None:
                self._log_dir.mkdir(parents=True, exist_ok=True)
                self._run_dir = self._log_dir
            else:
                self._run_dir = Path(tempfile.mkdtemp(prefix=f"devstack-{self.name}-"))
                self._owns_run_dir = True
        return self._run_dir

    def _wait_ready(self, port: int, process: ManagedProcess) -> None:
        wait_until(
            lambda: self._probe(port, process),
            process=process,
            timeout=self.startup_timeout,
            what=f"answer on 127.0.0.1:{port}",
        )


def wait_until(
    probe: Callable[[], bool],
    *,
    process: ManagedProcess,
    timeout: float,
    what: str,
) -> float:
    """Poll ``probe`` until it is true; fail early if ``process`` exits. Returns seconds."""
    started = time.monotonic()
    deadline = started + timeout
    delay = 0.01
    while True:
        if not process.is_running():
            raise process.failure(f"process exited before it would {what}")
        if probe():
            if not process.is_running():
                raise process.failure(f"process exited just after it seemed to {what}")
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise process.failure(f"did not {what} within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
