"""Child processes of the development stack: spawn with a log file, stop, clean up at exit.

Every child runs in its own process group (``start_new_session=True``) with its
stdout and stderr in one log file. ``stop()`` sends SIGTERM to the group, waits,
then SIGKILL, and is idempotent. Live children are tracked in a module registry
that an ``atexit`` hook empties, so a failing test or an exception in a caller
does not leave a broker or a Redis behind.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_STOP_TIMEOUT = 10.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class DevStackError(RuntimeError):
    """A development-stack component could not be found, started or stopped."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when this function ran."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, max_lines: int = 30) -> str:
    """The last ``max_lines`` lines of a log file, without terminal colour codes."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"
    lines = _ANSI.sub("", text).splitlines()[-max_lines:]
    return "\n".join(lines) if lines else "<log is empty>"


class ManagedProcess:
    """One child process in its own process group, its output in ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        if self._popen is not None:
            raise DevStackError(f"{self.name}: process already started (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise DevStackError(f"{self.name}: cannot execute {self.argv[0]}: {exc}") from exc
        _register(self)
        logger.debug("%s: started pid %d: %s", self.name, self._popen.pid, self.argv)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL. Idempotent."""
        popen = self._popen
        if popen is None:
            return
        try:
            if popen.poll() is None:
                # The leader is alive or an unreaped zombie, so its pid (= the pgid) is ours.
                _signal_group(popen.pid, signal.SIGTERM)
                try:
                    popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("%s: pid %d ignored SIGTERM, killing", self.name, popen.pid)
                    _signal_group(popen.pid, signal.SIGKILL)
                    popen.wait(timeout=timeout)
        finally:
            _unregister(self)
            self._close_log()
        logger.debug("%s: pid %d exited with %s", self.name, popen.pid, popen.returncode)

    def failure(self, reason: str) -> DevStackError:
        """An error saying why the process failed, with the tail of its log."""
        status = "running" if self.is_running() else f"exited with code {self.returncode}"
        return DevStackError(
            f"{self.name} failed to start: {reason} (pid {self.pid}, {status}; "
            f"command: {shlex.join(self.argv)}; log: {self.log_path})\n"
            f"--- last lines of {self.log_path.name} ---\n{log_tail(self.log_path)}"
        )

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


def _register(process: ManagedProcess) -> None:
    with _LIVE_LOCK:
        _LIVE.add(process)


def _unregister(process: ManagedProcess) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(process)


@atexit.register
def stop_all_processes() -> None:
    """Stop every child this module started that is still registered."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for process in live:
        try:
            process.stop(timeout=5.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            logger.exception("%s: could not stop pid %s", process.name, process.pid)
