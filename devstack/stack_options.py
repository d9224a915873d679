"""What a stack is asked to be (:class:`StackOptions`) and the checks made before anything
starts: impossible options, a taken API port, a missing dataset, missing external
addresses. Every message names the flag to change."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.process import LOOPBACK, DevStackError
from devstack.runfile import DEFAULT_RUN_DIR

#: settings the demo wants unless the caller's environment says otherwise
DEMO_DEFAULTS = {
    "RECSYS_STREAM_SESSION_TIMEOUT": "6",  # the dev broker holds a first join ~half of it
    "RECSYS_TRAIN_AFTER_EVENTS": "2000",  # a new model version every few minutes of replay
    "RECSYS_STATE_REBUILD_AUTO": "true",  # workers rebuild a Redis that lost the user state
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}
STOP_TIMEOUT = 15.0
EXTERNAL_ENV = ("RECSYS_KAFKA_BOOTSTRAP", "RECSYS_REDIS_URL")


class StackError(DevStackError):
    """The stack could not start, or a role of it died."""


@dataclass(frozen=True)
class StackOptions:
    dataset: str = "ml-100k"
    data_dir: Path | None = None
    train_fraction: float = 0.8
    replay: bool = True
    rate: float = 20.0
    workers: int = 1
    api_port: int = 8000
    #: API processes on the one port (0: one per core, RECSYS_API_PROCESSES)
    api_processes: int = 0
    partitions: int = 4
    run_dir: Path = DEFAULT_RUN_DIR
    external: bool = False
    fit_weights: bool = True
    ready_timeout: float = 120.0

    def check(self) -> None:
        """Refuse impossible options with a message naming the flag."""
        problems = []
        if not 0.0 < self.train_fraction <= 1.0:
            problems.append(f"--train-fraction must be in (0, 1], got {self.train_fraction:g}")
        if not self.rate > 0:
            problems.append(f"--rate must be > 0 events/s, got {self.rate:g}")
        if self.workers < 1:
            problems.append(f"--workers must be >= 1, got {self.workers}")
        if self.api_processes < 0:
            problems.append(f"--api-processes must be >= 0, got {self.api_processes}")
        if self.partitions < 1:
            problems.append(f"--partitions must be >= 1, got {self.partitions}")
        if not 1 <= self.api_port <= 65535:
            problems.append(f"--api-port must be a TCP port, got {self.api_port}")
        if problems:
            raise StackError("; ".join(problems))


def api_port_free(port: int) -> bool:
    """Whether the API could listen on 127.0.0.1:``port`` (with SO_REUSEADDR, as uvicorn)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def preflight(options: StackOptions, environ: Mapping[str, str] | None = None) -> None:
    """The checks that need nothing started: options, the API port, the dataset's place and,
    with ``external``, the addresses of the broker and Redis."""
    from recsys_core.errors import RecsysError
    from recsys_core.loaders import resolve_dataset_dir

    options.check()
    env = os.environ if environ is None else environ
    missing = [k for k in EXTERNAL_ENV if options.external and not env.get(k)]
    if missing:
        raise StackError(f"--external needs {' and '.join(missing)} in the environment")
    if not api_port_free(options.api_port):
        raise StackError(f"port {options.api_port} on {LOOPBACK} is taken: stop what uses it "
                         "or choose another port with --api-port")
    try:
        resolve_dataset_dir(options.dataset, options.data_dir)
    except RecsysError as exc:
        raise StackError(f"{exc} (--dataset, --data-dir)") from None


def settings_from_env(env: Mapping[str, str]) -> Any:
    """The common settings every role will read from ``env``."""
    from pydantic import ValidationError

    from adapters.settings import CommonSettings

    fields = CommonSettings.model_fields
    given = {k[7:].lower(): v for k, v in env.items()
             if k.startswith("RECSYS_") and k[7:].lower() in fields}
    try:
        return CommonSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise StackError(f"bad setting RECSYS_{str(first['loc'][0]).upper()}: "
                         f"{first['msg']}") from None
