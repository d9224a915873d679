"""The whole stack from one process: broker, Redis, model v1, seeded users, stream workers,
the trainer, the API and a replay, started in that order and stopped in reverse.

:class:`Stack` is what ``recsys demo`` and ``recsys up`` run (the supervisor). Every role
is a child process in its own process group with its log in ``<run-dir>/logs/<role>.log``
and its settings in ``RECSYS_*`` variables: the caller's environment, a few demo defaults
under it (:data:`DEMO_DEFAULTS`) and the stack's own addresses and directories over it.
A role that fails to become ready, or dies later, is reported with its log tail.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from devstack.kafka_broker import KafkaBroker
from devstack.process import LOOPBACK, ManagedProcess, free_port, log_tail
from devstack.redis_server import RedisServer
from devstack.runfile import RunDir, start_ticks
from devstack.stack_options import (
    DEMO_DEFAULTS,
    STOP_TIMEOUT,
    StackError,
    StackOptions,
    preflight,
    settings_from_env,
)

log = logging.getLogger(__name__)

__all__ = ["Stack", "StackError", "StackOptions", "preflight"]


@dataclass
class Role:
    """One child process of the stack."""

    name: str
    kind: str  # worker | trainer | api | replay
    process: ManagedProcess
    port: int | None = None
    ready_url: str | None = None  # answers 200 once the role is ready
    metrics_url: str | None = None
    may_finish: bool = False  # exit code 0 is the end of its work, not a failure
    ready: bool = False
    finished: bool = False


@dataclass
class Addresses:
    api: str
    docs: str
    web: str
    ops: str
    metrics: str
    kafka: str = ""
    redis: str = ""
    worker_metrics: list[str] = field(default_factory=list)
    trainer_metrics: str = ""


def answers(url: str | None, timeout: float = 1.0) -> bool:
    if url is None:
        return False
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class Stack:
    def __init__(self, options: StackOptions, *, environ: Mapping[str, str] | None = None,
                 on_phase: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.run = RunDir.at(options.run_dir)
        self.environ = dict(os.environ if environ is None else environ)
        self.on_phase = on_phase
        self.kafka: KafkaBroker | None = None
        self.redis: RedisServer | None = None
        self.kafka_bootstrap = ""
        self.redis_url = ""
        self.roles: list[Role] = []
        self.servers: list[dict[str, Any]] = []  # as recorded once started, for stack.json
        self.oneoff: ManagedProcess | None = None
        self.state = "starting"
        self.phase = ""
        self.error: str | None = None
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.ready_at: str | None = None
        self.dataset_dir: Path | None = None
        self.dataset_name = ""
        self._prepared = False
        self.train_events = 0
        self.replay_events = 0
        port = options.api_port
        base = f"http://{LOOPBACK}:{port}"
        self.addresses = Addresses(api=base, docs=f"{base}/docs", web=f"{base}/",
                                   ops=f"{base}/ops", metrics=f"{base}/metrics")

    # ------------------------------------------------------------ start

    def start(self) -> None:
        """Start everything and wait until every role is ready; :class:`StackError` (after
        which the caller runs :meth:`stop`) if anything fails."""
        preflight(self.options, self.environ)
        train_rows = self._load_dataset()
        notes = self.run.prepare(keep_supervisor_log=True)
        self._prepared = True
        for note in notes:
            self._phase(note)
        self._write()
        self._start_servers()
        self._phase(f"training model version 1 on {self.train_events:,} events")
        self._train()
        self._phase(f"seeding {self.train_events:,} events into Redis")
        self._seed(train_rows)
        del train_rows
        self._phase("starting the stream workers, the trainer and the API")
        for n in range(1, self.options.workers + 1):
            self._start_worker(n)
        self._start_trainer()
        self._start_api()
        self._wait_ready([r for r in self.roles if not r.ready])
        if self.options.replay and self.replay_events:
            self._start_replay()
        self.state, self.phase = "ready", "running"
        self.ready_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._write()
        log.info("stack ready: API %s", self.addresses.api)

    def _phase(self, phase: str) -> None:
        self.phase = phase
        log.info("%s", phase)
        if self.on_phase is not None:
            self.on_phase(phase)
        self._write()

    def _load_dataset(self) -> Any:
        from recsys_core.errors import RecsysError
        from recsys_core.loaders import load_dataset, resolve_dataset_dir
        from training.evaluation.splits import temporal_split

        self._phase(f"loading {self.options.dataset}")
        try:
            self.dataset_dir = resolve_dataset_dir(self.options.dataset,
                                                   self.options.data_dir).resolve()
            ds = load_dataset(str(self.dataset_dir))
        except RecsysError as exc:
            raise StackError(str(exc)) from None
        train, rest = temporal_split(ds.interactions, self.options.train_fraction)
        if len(train) == 0:
            raise StackError(f"--train-fraction {self.options.train_fraction:g} leaves no "
                             f"events of {ds.name} to train on")
        self.dataset_name = ds.name
        self.train_events, self.replay_events = len(train), len(rest)
        return train

    def _start_servers(self) -> None:
        if self.options.external:
            self.kafka_bootstrap = self.environ["RECSYS_KAFKA_BOOTSTRAP"]
            self.redis_url = self.environ["RECSYS_REDIS_URL"]
        else:
            self._phase("starting the broker and Redis")
            self.kafka = KafkaBroker(log_dir=self.run.logs)
            self.kafka.start()
            self._record_server("kafka", "broker", self.kafka)
            self.redis = RedisServer(log_dir=self.run.logs)
            self.redis.start()
            self._record_server("redis", "redis", self.redis)
            self.kafka_bootstrap, self.redis_url = self.kafka.bootstrap, self.redis.url
        self.addresses.kafka, self.addresses.redis = self.kafka_bootstrap, self.redis_url
        self._phase(f"creating topics ({self.options.partitions} partitions)")
        from kafka.errors import KafkaError

        from adapters.kafka import ensure_topics

        try:
            ensure_topics(settings_from_env(self.env()), self.options.partitions)
        except KafkaError as exc:
            raise StackError(f"cannot create topics on Kafka at {self.kafka_bootstrap}: "
                             f"{type(exc).__name__}: {exc}") from None

    def _record_server(self, name: str, kind: str, server: KafkaBroker | RedisServer) -> None:
        pid = server.pid
        self.servers.append({"name": name, "kind": kind, "pid": pid, "port": server.port,
                             "start_ticks": start_ticks(pid) if pid else None,
                             "log": str(server.log_path)})

    def env(self, **extra: str) -> dict[str, str]:
        """A role's environment: the caller's, the demo defaults under it, the stack's
        addresses and directories over it, then ``extra``."""
        env = {**DEMO_DEFAULTS, **self.environ}
        env.update({
            "RECSYS_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "RECSYS_REDIS_URL": self.redis_url,
            "RECSYS_MODEL_DIR": str(self.run.models),
            "RECSYS_EVENT_LOG_DIR": str(self.run.eventlog),
            "RECSYS_DATASET": str(self.dataset_dir),
            "RECSYS_TRAIN_BASE_FRACTION": repr(self.options.train_fraction),
            "RECSYS_STREAM_PARTITIONS": str(self.options.partitions),
        })
        if self.options.data_dir is not None:
            env["RECSYS_DATA_DIR"] = str(self.options.data_dir.resolve())
        env.update(extra)
        return env

    def _train(self) -> None:
        argv = [sys.executable, "-m", "recsys_cli.main", "train", "--dataset",
                str(self.dataset_dir), "--model-dir", str(self.run.models),
                "--train-fraction", repr(self.options.train_fraction), "--no-event-log",
                "--force", "--fit-weights" if self.options.fit_weights else "--no-fit-weights"]
        self.oneoff = ManagedProcess("train", argv, self.run.log("train"), env=self.env())
        self.oneoff.start()
        while self.oneoff.is_running():
            time.sleep(0.1)
        if self.oneoff.returncode != 0:
            raise StackError(self._failure("train", self.oneoff, "could not train model "
                                           "version 1"))
        self.oneoff.stop()
        self.oneoff = None

    def _seed(self, rows: Any) -> None:
        from adapters.redis_store import UserStateStore
        from devstack.seed import seed_follows, seed_users

        settings = settings_from_env(self.env())
        store = UserStateStore.from_url(self.redis_url, keys=settings.keys,
                                        cap=settings.user_history_cap)
        try:
            result = seed_users(store, self.dataset_name, rows, self.run.models)
            follows = seed_follows(store, self.dataset_name, rows)
        finally:
            store.r.close()
        self._phase(f"seeded {result.users:,} users ({result.applied:,} events, "
                    f"{result.vectors:,} vectors) in {result.seconds:.1f} s, "
                    f"{follows:,} synthetic follows")

    def _add(self, name: str, kind: str, argv: list[str], env: dict[str, str],
             **fields: Any) -> Role:
        role = Role(name, kind, ManagedProcess(name, argv, self.run.log(name), env=env),
                    **fields)
        self.roles.append(role)  # before start: stop() finds it whatever happens next
        role.process.start()
        return role

    def _start_worker(self, n: int) -> None:
        port = free_port()
        url = f"http://{LOOPBACK}:{port}/metrics"
        env = self.env(RECSYS_STREAM_METRICS_PORT=str(port), RECSYS_STREAM_METRICS_HOST=LOOPBACK,
                       RECSYS_STREAM_DATA_DIR=str(self.run.stream(n)))
        self._add(f"worker-{n}", "worker", [sys.executable, "-m", "streams"], env,
                  port=port, ready_url=url, metrics_url=url)
        self.addresses.worker_metrics.append(url)

    def _start_trainer(self) -> None:
        port = free_port()
        url = f"http://{LOOPBACK}:{port}/metrics"
        argv = [sys.executable, "-m", "recsys_cli.main", "trainer", "--dataset",
                str(self.dataset_dir), "--model-dir", str(self.run.models)]
        env = self.env(RECSYS_TRAINER_METRICS_PORT=str(port), RECSYS_TRAINER_METRICS_HOST=LOOPBACK)
        self._add("trainer", "trainer", argv, env, port=port, ready_url=url, metrics_url=url)
        self.addresses.trainer_metrics = url

    def _start_api(self) -> None:
        port = self.options.api_port
        # the operator page reads the workers' and the trainer's metrics through the API
        targets = [*self.addresses.worker_metrics, self.addresses.trainer_metrics]
        env = self.env(RECSYS_API_HOST=LOOPBACK, RECSYS_API_PORT=str(port),
                       RECSYS_API_PROCESSES=str(self.options.api_processes),
                       RECSYS_API_METRICS_TARGETS=",".join(t for t in targets if t))
        self._add("api", "api", [sys.executable, "-m", "serving"], env, port=port,
                  ready_url=f"{self.addresses.api}/readyz", metrics_url=self.addresses.metrics)

    def _start_replay(self) -> None:
        argv = [sys.executable, "-m", "recsys_cli.main", "replay", "--dataset",
                str(self.dataset_dir), "--fraction", repr(self.options.train_fraction),
                "--rate", repr(self.options.rate)]
        self._add("replay", "replay", argv, self.env(), may_finish=True, ready=True)

    def _wait_ready(self, roles: list[Role]) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        pending = list(roles)
        while pending:
            for role in list(pending):
                if not role.process.is_running():
                    raise StackError(self._failure(role.name, role.process,
                                                   "exited before it was ready"))
                if answers(role.ready_url):
                    role.ready = True
                    pending.remove(role)
                    log.info("%s ready (pid %s)", role.name, role.process.pid)
            if pending and time.monotonic() >= deadline:
                role = pending[0]
                raise StackError(self._failure(
                    role.name, role.process, f"did not answer {role.ready_url} within "
                    f"{self.options.ready_timeout:.0f} s"))
            if pending:
                time.sleep(0.2)

    def _failure(self, name: str, process: ManagedProcess, reason: str) -> str:
        code = process.returncode
        status = "still running" if code is None else f"exit code {code}"
        return (f"{name} {reason} ({status}; log: {process.log_path})\n"
                f"--- last lines of {process.log_path.name} ---\n"
                f"{log_tail(process.log_path)}")

    # ------------------------------------------------------------ run

    def poll(self) -> str | None:
        """Why the stack cannot go on (a role or server died), or None if all is well."""
        for role in self.roles:
            code = role.process.returncode
            if code is None or role.finished:
                continue
            if role.may_finish and code == 0:
                role.finished = True
                log.info("%s finished", role.name)
                self._write()
                continue
            return self._failure(role.name, role.process, "died")
        for server in (self.kafka, self.redis):
            if server is not None and not server.is_running():
                return f"{server.name} died (log: {server.log_path})"
        return None

    # ------------------------------------------------------------ stop

    def stop(self, error: str | None = None) -> None:
        """Stop every process started, in reverse order: replay, API, trainer, workers,
        then the broker and Redis. Idempotent."""
        if error is not None:
            self.error = error
        self.state = "stopping"
        self._write()
        if self.oneoff is not None:
            self.oneoff.stop(timeout=STOP_TIMEOUT)
        for role in reversed(self.roles):
            if role.process.is_running():
                log.info("stopping %s (pid %s)", role.name, role.process.pid)
            role.process.stop(timeout=STOP_TIMEOUT)
        for server in (self.kafka, self.redis):
            if server is not None:
                server.stop()
        self.state = "failed" if self.error else "stopped"
        self._write()

    # ------------------------------------------------------------ the stack file

    def describe(self) -> dict[str, Any]:
        """What ``stack.json`` holds."""
        roles = list(self.servers)
        for role in self.roles:
            pid = role.process.pid
            roles.append({"name": role.name, "kind": role.kind, "pid": pid,
                          "start_ticks": start_ticks(pid) if pid else None,
                          "port": role.port, "metrics_url": role.metrics_url,
                          "ready_url": role.ready_url, "log": str(role.process.log_path),
                          "finished": role.finished})
        return {
            "state": self.state, "phase": self.phase, "error": self.error,
            "started_at": self.started_at, "ready_at": self.ready_at,
            "run_dir": str(self.run.root),
            "supervisor": {"pid": os.getpid(), "start_ticks": start_ticks(os.getpid()),
                           "log": str(self.run.log("supervisor"))},
            "options": {k: str(v) if isinstance(v, Path) else v
                        for k, v in asdict(self.options).items()},
            "dataset": str(self.dataset_dir) if self.dataset_dir else None,
            "train_events": self.train_events, "replay_events": self.replay_events,
            "addresses": asdict(self.addresses),
            "roles": roles,
        }

    def _write(self) -> None:
        if not self._prepared:  # never write into a directory prepare() has not accepted
            return
        try:
            self.run.write(self.describe())
        except OSError as exc:  # the stack runs on; status and down need the file, though
            log.warning("could not write %s: %s", self.run.stack_file, exc)
