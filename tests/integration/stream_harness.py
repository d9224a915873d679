"""Helpers for the stream-worker integration tests (real broker, real Redis, real processes).

- a model trained on ml-100k once per test session and published to a registry directory;
- :class:`WorkerProcess`: ``python -m streams`` in its own process group with its own
  environment and log file, stopped with SIGTERM then SIGKILL;
- :func:`wait_for`: poll a condition until a deadline, with the workers' logs on failure;
- producing events with kafka-python and reading a topic to its real end;
- the expected Redis state computed in-process with :class:`StreamProcessor`.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from adapters.kafka import ensure_topics
from adapters.redis_store import UserStateStore
from adapters.settings import CommonSettings
from devstack import DevStack, free_port
from recsys_core.dataset import Dataset
from recsys_core.events import EventType
from recsys_core.foldin import fold_in_user
from recsys_core.keys import Keys
from recsys_core.scoring import BlendWeights
from streams.processor import ModelView, Record, StreamProcessor
from training.pipeline import TrainParams, train_models
from training.registry import ModelRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
#: the dev broker holds a group's first join for about half of this
SESSION_TIMEOUT_S = 6.0
MODEL_DIR_NAME = "stream-model-ml100k"


# ---------------------------------------------------------------- model


def publish_model(dataset: Dataset, root: Path) -> Path:
    """Train on ``dataset`` and publish version 1 under ``root``, unless already there.

    Uses ``train_models`` with default blend weights: ``run_training`` on an empty
    registry fits the blend first (~20 s), and the stream only needs the ALS factors,
    the confidence rule and the content arrays. A file lock makes concurrent callers
    (two test modules) train once.
    """
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        registry = ModelRegistry(root)
        if registry.current_version() is None:
            models = train_models(dataset, TrainParams(), BlendWeights(), version=1)
            registry.publish(models.bundle)
    return root


def shared_model_dir(basetemp: Path, dataset: Dataset) -> Path:
    """The session's ml-100k model registry (trained on first use)."""
    return publish_model(dataset, basetemp / MODEL_DIR_NAME)


def load_view(model_dir: Path) -> ModelView:
    return ModelView(ModelRegistry(model_dir).load())


def expected_vector(
    view: ModelView, ratings: Mapping[str, float], completions: Mapping[str, float] | None = None
) -> npt.NDArray[np.float32]:
    """The fold-in of one user's (movie → latest rating, best completion), computed here
    with the model's confidence rule; movies the model does not know are left out."""
    completions = completions or {}
    idx, conf = [], []
    for movie in sorted(set(ratings) | set(completions)):
        i = view.bundle.movies.get(movie)
        if i is None:
            continue
        idx.append(i)
        conf.append(view.rule.combine(ratings.get(movie), completions.get(movie)))
    return fold_in_user(view.bundle.item_factors, view.bundle.yty, np.asarray(idx, np.int64),
                        np.asarray(conf, np.float64), view.regularization)


# ---------------------------------------------------------------- events


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def rating_event(event_id: str, user: str, movie: str, rating: float, ts: float,
                 **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user, "movie_id": movie, "rating": rating,
            "occurred_at": iso(ts), **extra}


def watch_event(event_id: str, user: str, movie: str, ts: float, *,
                completion: float | None = None, watched: float | None = None,
                duration: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"event_id": event_id, "user_id": user, "movie_id": movie,
                           "occurred_at": iso(ts)}
    if completion is not None:
        out["completion"] = completion
    if watched is not None:
        out["watched_seconds"] = watched
    if duration is not None:
        out["duration_seconds"] = duration
    return out


def encode(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def ml100k_events(dataset: Dataset, n: int, user_prefix: str = "") -> list[dict[str, Any]]:
    """The first ``n`` ml-100k ratings in time order as rating events (unique event ids)."""
    df = dataset.interactions.sort_values(["timestamp", "user_id", "movie_id"],
                                          kind="stable").head(n)
    return [
        rating_event(f"{user_prefix}ml100k-{row.Index}", f"{user_prefix}{row.user_id}",
                     str(row.movie_id), float(row.rating), float(row.timestamp))
        for row in df.itertuples()
    ]


@dataclass(frozen=True)
class Message:
    """One message as produced (``value`` None is a tombstone)."""

    key: bytes | None
    value: bytes | None


def produce(bootstrap: str, topic: str, messages: Iterable[Message]) -> int:
    """Send every message and wait for each ack; returns how many were sent."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             retries=5, max_request_size=1_048_576,
                             client_id="stream-harness")
    try:
        futures = [producer.send(topic, key=m.key, value=m.value) for m in messages]
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close(timeout=10)
    return len(futures)


def keyed(events: Iterable[Mapping[str, Any]]) -> list[Message]:
    """Valid events keyed by user id, as the real producers key them."""
    return [Message(str(e["user_id"]).encode(), encode(e)) for e in events]


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic``, reading until at least ``expected`` arrived and every
    partition is read to its high watermark (as Fetch reports it; ListOffsets is wrong on
    the dev broker after batched sends)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, client_id="stream-harness-reader",
                             consumer_timeout_ms=1000)
    try:
        deadline = time.monotonic() + timeout
        parts: set[int] | None = None
        while parts is None:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic} does not exist")
                consumer.topics()  # refresh the metadata
                time.sleep(0.05)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        while True:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
            at_end = all(
                consumer.highwater(tp) is not None
                and consumer.position(tp) >= consumer.highwater(tp)  # type: ignore[operator]
                for tp in tps
            )
            if len(out) >= expected and at_end:
                return out
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: {len(out)} records after {timeout:.0f} s, expected {expected}")
    finally:
        consumer.close()


def dead_letters(bootstrap: str, topic: str, expected: int,
                 timeout: float = 30.0) -> list[dict[str, Any]]:
    """The JSON bodies of a dead-letter topic, with each record's key added as ``_key``."""
    out = []
    for rec in read_topic(bootstrap, topic, expected, timeout):
        body = json.loads(rec.value)
        body["_key"] = rec.key
        out.append(body)
    return out


def create_topics(settings: CommonSettings) -> None:
    """Input topics with :data:`PARTITIONS` partitions and their dead-letter topics."""
    ensure_topics(settings, PARTITIONS)


# ---------------------------------------------------------------- waiting


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    workers: Sequence[WorkerProcess] = (),
    describe: Callable[[], str] | None = None,
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail with ``what``,
    ``describe()`` and the workers' log tails at the deadline or when a worker dies."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = condition()
        if value:
            return value
        dead = [w for w in workers if not w.is_running() and not w.killed]
        if dead or time.monotonic() > deadline:
            why = (f"worker(s) {[w.name for w in dead]} exited" if dead
                   else f"not within {timeout:.0f} s")
            state = f"\nstate: {describe()}" if describe is not None else ""
            logs = "".join(w.describe() for w in workers)
            raise AssertionError(f"waiting for {what}: {why}{state}{logs}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


# ---------------------------------------------------------------- worker process


def worker_env(
    *,
    kafka_bootstrap: str,
    redis_url: str,
    name: str,
    model_dir: Path,
    data_dir: Path,
    metrics_port: int = 0,
    **overrides: str,
) -> dict[str, str]:
    """A worker's environment: own topic prefix, key prefix and consumer group ``name``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update({
        "RECSYS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "RECSYS_REDIS_URL": redis_url,
        "RECSYS_TOPIC_PREFIX": f"{name}.",
        "RECSYS_KEY_PREFIX": name,
        "RECSYS_STREAM_APP_ID": name,
        "RECSYS_MODEL_DIR": str(model_dir),
        "RECSYS_STREAM_DATA_DIR": str(data_dir),
        "RECSYS_STREAM_PARTITIONS": str(PARTITIONS),
        "RECSYS_STREAM_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S),
        "RECSYS_STREAM_METRICS_PORT": str(metrics_port),
        "RECSYS_STREAM_MODEL_POLL_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k.upper() if k.startswith("RECSYS_") else f"RECSYS_{k.upper()}": v
                for k, v in overrides.items()})
    return env


def settings_for(env: Mapping[str, str]) -> CommonSettings:
    """The settings a worker with ``env`` reads (topic names, keys)."""
    return CommonSettings(**{k[len("RECSYS_"):].lower(): v for k, v in env.items()
                             if k.startswith("RECSYS_") and k[len("RECSYS_"):].lower()
                             in CommonSettings.model_fields})


class WorkerProcess:
    """``python -m streams`` in its own process group, output in ``log_path``."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path,
                 metrics_port: int = 0) -> None:
        self.name = name
        self.env = dict(env)
        self.log_path = log_path
        self.metrics_port = metrics_port
        self._popen: subprocess.Popen[bytes] | None = None
        #: killed on purpose by the test (its exit is not a failure)
        self.killed = False

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "streams"], cwd=REPO_ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would, and reap the leader."""
        if self._popen is None:
            return
        self.killed = True
        if self._popen.poll() is None:  # never signal a group whose leader was reaped
            _signal_group(self._popen.pid, signal.SIGKILL)
        self._popen.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the group, wait, then SIGKILL. Idempotent; returns the exit code."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            _signal_group(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(popen.pid, signal.SIGKILL)
                popen.wait(timeout=timeout)
        return popen.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def describe(self, lines: int = 60) -> str:
        status = "running" if self.is_running() else (
            f"exited {self._popen.returncode}" if self._popen is not None else "not started")
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"\n--- worker {self.name} (pid {self.pid}, {status}), {self.log_path} ---\n{tail}"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Samples of the worker's ``/metrics`` (empty while it does not answer)."""
        if not self.metrics_port:
            raise ValueError("this worker has no metrics port")
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def events_total(self, kind: str, outcome: str) -> float:
        key = ("recsys_stream_events_total", (("outcome", outcome), ("type", kind)))
        return self.metrics().get(key, 0.0)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def new_name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- Redis state


@dataclass
class UserState:
    history: dict[str, str]  # movie → packed pair state
    recent: dict[str, float]
    rev: int
    vector: npt.NDArray[np.float32] | None
    vector_version: int | None
    vector_rev: int | None
    affinity: dict[str, float]


def read_user(client: redis.Redis, keys: Keys, user: str) -> UserState:
    hist = client.hgetall(keys.history(user))
    recent = client.zrange(keys.recent(user), 0, -1, withscores=True)
    meta = client.hgetall(keys.meta(user))
    vec = meta.get(b"vector")

    def opt(name: bytes) -> int | None:
        return int(meta[name]) if name in meta else None

    return UserState(
        history={m.decode(): v.decode() for m, v in hist.items()},
        recent={m.decode(): float(s) for m, s in recent},
        rev=int(meta.get(b"rev", b"0")),
        vector=None if vec is None else np.frombuffer(vec, dtype="<f4").astype(np.float32),
        vector_version=opt(b"vector_version"),
        vector_rev=opt(b"vector_rev"),
        affinity=json.loads(meta[b"affinity"]) if b"affinity" in meta else {},
    )


def event_log(client: redis.Redis, keys: Keys) -> list[tuple[str, dict[str, Any]]]:
    """Every event-log entry as (type, event JSON)."""
    out = []
    for _, fields in client.xrange(keys.event_log()):
        kind, _, raw = fields[b"e"].partition(b" ")
        out.append((kind.decode(), json.loads(raw)))
    return out


def assert_same_user_state(actual: UserState, expected: UserState, who: str,
                           atol: float = 1e-5) -> None:
    """Equal history, recency, rev and vector metadata; vector and affinities to ``atol``
    (a fold-in sums in the order Redis returns the pairs)."""
    assert actual.history == expected.history, f"{who}: history differs"
    assert actual.recent == expected.recent, f"{who}: recent set differs"
    assert actual.rev == expected.rev, f"{who}: rev {actual.rev} != {expected.rev}"
    assert actual.vector_rev == expected.vector_rev, f"{who}: vector_rev differs"
    assert actual.vector_version == expected.vector_version, f"{who}: vector_version differs"
    assert actual.vector is not None and expected.vector is not None, f"{who}: no vector"
    np.testing.assert_allclose(actual.vector, expected.vector, atol=atol, rtol=0,
                               err_msg=f"{who}: vector differs")
    assert set(actual.affinity) == set(expected.affinity), f"{who}: affinity tokens differ"
    for token, value in expected.affinity.items():
        assert abs(actual.affinity[token] - value) <= 2e-4, f"{who}: affinity {token} differs"


def reference_run(
    client: redis.Redis,
    view: ModelView,
    key_prefix: str,
    batches: Iterable[tuple[EventType, Sequence[bytes | None]]],
    cap: int = 500,
) -> StreamProcessor:
    """Apply the same events in-process into ``key_prefix`` (the expected state)."""
    store = UserStateStore(client, keys=Keys(key_prefix), cap=cap)
    processor = StreamProcessor(store, lambda: view)
    offset = 0
    for kind, values in batches:
        records = []
        for v in values:
            records.append(Record(v, f"reference.{kind}", 0, offset))
            offset += 1
        processor.process(kind, records)
    return processor


def chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]


# ---------------------------------------------------------------- a worker stack


@dataclass
class Stack:
    """A running worker and what the tests need to talk to it."""

    devstack: DevStack
    env: dict[str, str]
    workers: list[WorkerProcess]
    client: redis.Redis
    view: ModelView

    @property
    def settings(self) -> Any:
        return settings_for(self.env)

    @property
    def keys(self) -> Keys:
        return Keys(self.env["RECSYS_KEY_PREFIX"])

    @property
    def bootstrap(self) -> str:
        return self.devstack.kafka_bootstrap

    def topic(self, kind: str) -> str:
        return str(self.settings.topic(kind))

    def start_worker(self, label: str, log_dir: Path, metrics: bool = True) -> WorkerProcess:
        port = free_port() if metrics else 0
        env = {**self.env, "RECSYS_STREAM_METRICS_PORT": str(port)}
        worker = WorkerProcess(label, env, log_dir / f"{label}.log", port).start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop()

    def logs(self) -> str:
        return "".join(w.describe() for w in self.workers)


def make_stack(devstack: DevStack, name: str, model_dir: Path, scratch: Path,
               **overrides: str) -> Stack:
    env = worker_env(kafka_bootstrap=devstack.kafka_bootstrap, redis_url=devstack.redis_url,
                     name=name, model_dir=model_dir, data_dir=scratch / "data", **overrides)
    create_topics(settings_for(env))
    return Stack(devstack, env, [], devstack.redis.client(), load_view(model_dir))
