"""The run directory of a whole stack (``recsys demo`` / ``up``) and its ``stack.json``.

Layout of ``<run-dir>``::

    stack.json        what runs: state, phase, pids, ports, addresses (see StackFile)
    models/           published model versions (RECSYS_MODEL_DIR)
    eventlog/         the stream's Parquet event log (RECSYS_EVENT_LOG_DIR)
    stream/worker-N/  each stream worker's scratch directory
    logs/             one log per role: supervisor, train, worker-N, trainer, api, replay,
                      tansu-PORT, redis-PORT (and redis-PORT-data, empty: no persistence)

``stack.json`` is written atomically by the supervisor and read by ``recsys up``,
``recsys down`` and ``recsys status``. Every start begins from empty ``models``,
``eventlog`` and ``stream`` (the broker and Redis start empty too), so a run directory is
only reused when ``stack.json`` says nothing is running in it. The previous run's published
models are not deleted: they move to ``previous-models/`` (replacing the run before), and
the start says so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.process import DevStackError

STACK_FILE = "stack.json"
DEFAULT_RUN_DIR = Path("runs/stack")
SUPERVISOR_LOG = "supervisor.log"
#: sub-directories a start empties (the stack's own output, nothing else)
OWN_DIRS = ("models", "eventlog", "stream", "logs")
#: where a start keeps the previous run's published models
PREVIOUS_MODELS = "previous-models"
#: states of stack.json; the first three mean a supervisor may be alive
LIVE_STATES = ("starting", "ready", "stopping")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def at(cls, path: Path | str) -> RunDir:
        return cls(Path(path).expanduser().resolve())

    @property
    def stack_file(self) -> Path:
        return self.root / STACK_FILE

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def eventlog(self) -> Path:
        return self.root / "eventlog"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def stream(self, worker: int) -> Path:
        return self.root / "stream" / f"worker-{worker}"

    def log(self, role: str) -> Path:
        return self.logs / f"{role}.log"

    def read(self) -> dict[str, Any] | None:
        """The stack file, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(self.stack_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write(self, data: dict[str, Any]) -> None:
        """Replace the stack file atomically (temp file, fsync, rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.stack_file.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.stack_file)

    def running_supervisor(self) -> int | None:
        """The pid of a live supervisor recorded here, else None."""
        data = self.read()
        if data is None or data.get("state") not in LIVE_STATES:
            return None
        pid = data.get("supervisor", {}).get("pid")
        if isinstance(pid, int) and same_process(pid, data["supervisor"].get("start_ticks")):
            return pid
        return None

    def prepare(self, *, keep_supervisor_log: bool = False) -> list[str]:
        """Make the run directory ready for a new start: refuse when a stack runs in it or
        when it holds anything but a previous stack's output, then empty that output. The
        previous run's models move to ``previous-models/``; the returned notes say so."""
        pid = self.running_supervisor()
        if pid is not None and pid != os.getpid():
            raise DevStackError(f"a stack is already running in {self.root} (supervisor pid "
                                f"{pid}); stop it with `recsys down --run-dir {self.root}`")
        left = [f"{r.get('name')} (pid {r['pid']})" for r in (self.read() or {}).get("roles", [])
                if isinstance(r.get("pid"), int) and same_process(r["pid"], r.get("start_ticks"))]
        if left and pid is None:
            raise DevStackError(f"processes of an earlier stack in {self.root} are still "
                                f"running: {', '.join(left)}; stop them with "
                                f"`recsys down --run-dir {self.root}`")
        if self.root.exists():
            if not self.root.is_dir():
                raise DevStackError(f"run directory {self.root} is a file")
            foreign = sorted(p.name for p in self.root.iterdir()
                             if p.name not in (*OWN_DIRS, STACK_FILE, PREVIOUS_MODELS)
                             and not p.name.endswith(".tmp"))
            if foreign:
                raise DevStackError(
                    f"run directory {self.root} holds files a stack did not write "
                    f"({', '.join(foreign[:5])}); choose another with --run-dir")
        notes: list[str] = []
        kept = self.root / PREVIOUS_MODELS
        versions = [p for p in self.models.glob("v*") if p.is_dir()] if self.models.is_dir() else []
        if versions:
            if kept.exists():
                _remove(kept)
            self.models.rename(kept)
            notes.append(f"the previous run's {len(versions)} model version(s) moved from "
                         f"{self.models} to {kept}")
        for name in OWN_DIRS:
            path = self.root / name
            if name == "logs" and keep_supervisor_log and path.is_dir():
                for child in path.iterdir():
                    if child.name != SUPERVISOR_LOG:
                        _remove(child)
            elif path.exists():
                _remove(path)
        self.stack_file.unlink(missing_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        return notes


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, from /proc), to tell it from a later
    process that reuses the pid; None if it does not exist or /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of the whole line


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _proc_state(pid)
    return state not in ("Z", "X")  # a zombie has exited, it only waits to be reaped


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def same_process(pid: int, ticks: int | None) -> bool:
    """Whether ``pid`` is alive and is the process recorded with start time ``ticks``."""
    if not pid_alive(pid):
        return False
    return ticks is None or start_ticks(pid) in (None, ticks)


def terminate(pid: int, ticks: int | None, timeout: float) -> bool:
    """SIGTERM the process group led by ``pid`` (every child of the stack leads its own),
    wait up to ``timeout`` s, then SIGKILL. True if something had to be stopped."""
    if not same_process(pid, ticks):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):  # not a group leader after all
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not same_process(pid, ticks):
                return True
            time.sleep(0.05)
    return True


def wait_gone(pid: int, ticks: int | None, timeout: float) -> bool:
    """Wait until ``pid`` has exited; whether it did within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while same_process(pid, ticks):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
