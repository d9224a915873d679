"""Fault scenarios against real processes: the embedded broker, a Redis with an
append-only file (``appendfsync always``), two stream workers (``python -m streams``) and the
API (``python -m serving``), with an outside kafka-python producer of the wire format.

Per scenario (own topics, keys and group), events with unique ids are sent at a steady rate
while the fault hits a third of the way in:

- ``kill``: SIGKILL one of the two workers, restarted 15 s later;
- ``term``: SIGTERM one of the two workers, restarted 15 s later;
- ``redis-kill``: SIGKILL Redis, restarted on the same port and AOF 5 s later;
- ``redis-freeze``: SIGSTOP Redis for 10 s, then SIGCONT;
- ``redis-full``: ``maxmemory`` just above what is used (``noeviction``) for 10 s;
- ``broker-kill``: SIGKILL the broker, started again ``--outage`` seconds later (60) on the
  same port and storage, while the producer keeps sending and the API keeps being asked.

Reported: events sent, applied (distinct ids in the event log), lost, double-counted
(event-log entries beyond one per id, and users' ``rev`` above their events), API 5xx
answers, and stale answers (a top-10 holding a movie the user's history in Redis already
held before the request); with the API, a poster also sends events through
``POST /v1/events`` (retrying each one after a 503 until it is taken) and counts its 503s,
which are the right answer while the broker is gone, apart from other 5xx.

The broker keeps its data in memory for the other scenarios; for ``broker-kill`` it is a
broker of its own whose storage is a local S3 server (:mod:`devstack.object_store`), so
topics, records and committed offsets outlive the broker process.

Run: ``python -m benchmarks.faults [--events 20000] [--rate 800] [--scenarios kill,term]
[--outage 60] [--tree PATH]`` (``--tree``: run the workers and API of another checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from adapters.kafka import ensure_topics
from adapters.settings import CommonSettings
from benchmarks.harness import ROOT, publish_model, wait_for
from benchmarks.serving import api_process
from devstack import KafkaBroker, free_port
from devstack.object_store import S3Store
from devstack.redis_server import find_redis_server_bin

PARTITIONS = 4
SCENARIOS = ("kill", "term", "redis-kill", "redis-freeze", "redis-full", "broker-kill")


class DurableRedis:
    """redis-server with an AOF fsynced on every write, restartable on the same port."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port()
        self.dir = run_dir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def start(self) -> None:
        argv = [find_redis_server_bin(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--dir", str(self.dir), "--maxmemory-policy", "noeviction"]
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        c = self.client()
        wait_for(lambda: _pings(c), 30)
        c.close()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(20)


def _pings(c: redis.Redis) -> bool:
    try:
        return bool(c.ping())
    except (redis.RedisError, OSError):
        return False


class Worker:
    def __init__(self, env: dict[str, str], log: Path, tree: Path) -> None:
        self.env, self.log, self.tree = env, log, tree
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        full = {**os.environ, **self.env, "PYTHONPATH": str(self.tree)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "streams"], env=full,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.tree)
        return self

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)


class Producer(threading.Thread):
    """Sends the events keyed by user at ``rate`` per second."""

    def __init__(self, bootstrap: str, topic: str, events: list[dict[str, Any]],
                 rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.events, self.rate = bootstrap, topic, events, rate
        self.sent = 0
        self.failed = 0
        self.resent = 0
        self.resend_rounds = 5

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                 retries=20, client_id="faults-producer")
        start = time.monotonic()
        futures = []
        for n, e in enumerate(self.events):
            ahead = n / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
            futures.append(producer.send(self.topic, key=e["user_id"].encode(),
                                         value=json.dumps(e).encode()))
            self.sent = n + 1
        producer.flush(timeout=180)
        pending = list(zip(self.events, futures, strict=True))
        for _ in range(self.resend_rounds + 1):
            failed = []
            for e, f in pending:
                try:
                    f.get(timeout=60)
                except Exception:  # the broker did not take it: send it again, same id
                    failed.append(e)
            if not failed:
                break
            self.resent += len(failed)
            time.sleep(2)
            pending = [(e, producer.send(self.topic, key=e["user_id"].encode(),
                                         value=json.dumps(e).encode())) for e in failed]
            producer.flush(timeout=180)
        self.failed = len(failed)  # counted: an event the broker never took is not "lost"
        producer.close(timeout=10)


class Prober(threading.Thread):
    """Asks the API for probe users' top-10s; counts 5xx and stale answers."""

    def __init__(self, base: str, client: redis.Redis, settings: CommonSettings,
                 users: list[str]) -> None:
        super().__init__(daemon=True)
        self.base, self.r, self.keys, self.users = base, client, settings.keys, users
        self.done = threading.Event()
        self.asked = self.errors_5xx = self.stale = self.unanswered = 0

    def run(self) -> None:
        rng = random.Random(1)
        while not self.done.is_set():
            user = rng.choice(self.users)
            try:
                seen = {m.decode() for m in self.r.hkeys(self.keys.history(user))}
            except (redis.RedisError, OSError):
                seen = set()  # Redis down: only 5xx are counted
            url = f"{self.base}/v1/users/{user}/recommendations?k=10"
            self.asked += 1
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    body = json.loads(r.read())
                items = {str(i["movie_id"]) for i in body.get("items", [])}
                if items & seen:
                    self.stale += 1
            except urllib.error.HTTPError as exc:
                if exc.code >= 500:
                    self.errors_5xx += 1
            except OSError:
                self.unanswered += 1
            time.sleep(0.02)


class Poster(threading.Thread):
    """Posts one rating at a time through the API; a 503 is retried with the same id."""

    def __init__(self, base: str, label: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.base, self.label, self.headers = base, label, headers
        self.done = threading.Event()
        self.accepted: list[str] = []
        self.answers_503 = self.errors_5xx = self.unanswered = 0
        self.retry_after_missing = 0

    def run(self) -> None:
        n = 0
        while not self.done.is_set():
            event = {"type": "rating", "event_id": f"{self.label}-api-{n}",
                     "user_id": f"{self.label}-api-u{n % 50}",
                     "movie_id": str(1 + (n * 11) % 1682), "rating": float(1 + n % 5)}
            if self._post(event):
                self.accepted.append(str(event["event_id"]))
                n += 1
            time.sleep(0.05)

    def _post(self, event: dict[str, Any]) -> bool:
        body = json.dumps({"events": [event]}).encode()
        req = urllib.request.Request(f"{self.base}/v1/events", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return bool(json.loads(r.read()).get("accepted"))
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                self.answers_503 += 1
                if not exc.headers.get("Retry-After"):
                    self.retry_after_missing += 1
                time.sleep(0.5)
            elif exc.code >= 500:
                self.errors_5xx += 1
        except OSError:
            self.unanswered += 1
        return False


def events_for(label: str, n: int, users: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_600_000_000 + i))
        out.append({"event_id": f"{label}-{i}", "user_id": f"{label}-u{i % users}",
                    "movie_id": str(1 + (i * 7) % 1682), "rating": float(1 + i % 5),
                    "occurred_at": at})
    return out


def count_applied(client: redis.Redis, settings: CommonSettings) -> Counter[str]:
    counts: Counter[str] = Counter()
    last = "-"
    while True:
        chunk = client.xrange(settings.keys.event_log(), min=last, count=5000)
        if last != "-":
            chunk = chunk[1:]
        if not chunk:
            return counts
        for _, fields in chunk:
            raw = fields[b"e"].partition(b" ")[2]
            counts[json.loads(raw)["event_id"]] += 1
        last = chunk[-1][0].decode()


def run_scenario(name: str, args: argparse.Namespace, broker: KafkaBroker, rds: DurableRedis,
                 model_dir: Path, run_dir: Path) -> dict[str, Any]:
    """One fault against a fresh group, topics and keys; the counts as a dict."""
    label = f"f{name.replace('-', '')}{int(time.time()) % 100000}"
    env = {
        "RECSYS_KAFKA_BOOTSTRAP": broker.bootstrap, "RECSYS_REDIS_URL": rds.url,
        "RECSYS_TOPIC_PREFIX": f"{label}.", "RECSYS_KEY_PREFIX": label,
        "RECSYS_STREAM_APP_ID": label, "RECSYS_MODEL_DIR": str(model_dir),
        "RECSYS_STREAM_DATA_DIR": str(run_dir / label), "RECSYS_STREAM_PARTITIONS": "4",
        "RECSYS_STREAM_SESSION_TIMEOUT": "6", "RECSYS_STREAM_ARCHIVE_SECONDS": "3600",
        "RECSYS_EVENT_LOG_DIR": str(run_dir / label / "eventlog"),
        "RECSYS_STREAM_METRICS_PORT": "0", "RECSYS_LOG_LEVEL": args.log_level,
    }
    settings = CommonSettings(**{k[7:].lower(): v for k, v in env.items()
                                 if k[7:].lower() in CommonSettings.model_fields})
    ensure_topics(settings, PARTITIONS)
    events = events_for(label, args.events, args.users)
    warm = events_for(f"{label}w", 200, 20)
    tree = Path(args.tree).resolve()
    client = rds.client()
    oom_before = _oom_errors(client)
    with ExitStack() as stack:
        workers = [Worker(env, run_dir / f"{label}-{w}.log", tree).start() for w in "ab"]
        for w in workers:
            stack.callback(w.stop)
        api_base = None
        if not args.no_api:
            _, api_base = stack.enter_context(
                api_process(env, run_dir / f"{label}-api.log", cache=True, root=tree))
        # both workers in the group and applying
        Producer(broker.bootstrap, settings.topic("rating"), warm, 100).run()
        wait_for(lambda: client.xlen(settings.keys.event_log()) >= len(warm), 180)
        prober = poster = None
        if api_base is not None:
            prober = Prober(api_base, rds.client(), settings,
                            sorted({e["user_id"] for e in events})[:50])
            prober.start()
            poster = Poster(api_base, label, {})
            poster.start()
        producer = Producer(broker.bootstrap, settings.topic("rating"), events, args.rate)
        producer.start()
        wait_for(lambda: producer.sent >= len(events) // 3, 600)
        started = time.monotonic()
        fault(name, workers[1], rds, client, broker, args.outage)
        producer.join()
        if poster is not None:
            poster.done.set()
            poster.join(30)
        posted = len(poster.accepted) if poster is not None else 0
        wait_done(client, settings, len(events) + len(warm) + posted)
        if prober is not None:
            prober.done.set()
            prober.join(15)
        counts = count_applied(client, settings)
        lag = lag_report(client, settings)
    sent = {e["event_id"] for e in events} | set(poster.accepted if poster else [])
    applied = sent & set(counts)
    missing = sent - applied
    in_broker = broker_ids(broker.bootstrap, settings.topic("rating")) if missing else set()
    oom_after = _oom_errors(client) + (oom_before if name == "redis-kill" else 0)
    revs = 0
    for user in {e["user_id"] for e in events}:
        revs += int(client.hget(settings.keys.meta(user), "rev") or 0)
    client.close()
    return {
        "scenario": name, "sent": len(sent) - producer.failed, "producer_failed": producer.failed,
        "applied": len(applied), "lost": len(sent) - len(applied) - producer.failed,
        "double_counted": sum(c - 1 for i, c in counts.items() if i in sent and c > 1),
        "rev_excess": revs - len(applied),
        "api_asked": prober.asked if prober else None,
        "api_5xx": prober.errors_5xx if prober else None,
        "api_unanswered": prober.unanswered if prober else None,
        "producer_resent": producer.resent,
        "api_posted": posted,
        "api_post_503": poster.answers_503 if poster else None,
        "api_post_5xx": poster.errors_5xx if poster else None,
        "api_post_unanswered": poster.unanswered if poster else None,
        "api_503_without_retry_after": poster.retry_after_missing if poster else None,
        "stale_answers": prober.stale if prober else None,
        "seconds_after_fault": round(time.monotonic() - started, 1),
        "redis_oom_replies": oom_after - oom_before,
        **lag,
        # of the lost: held by the broker (the stream did not apply them), or acked by the
        # broker and then absent from it (the broker lost them)
        "lost_in_broker": len(missing & in_broker),
        "lost_by_broker": len(missing - in_broker) - producer.failed,
        "lost_sample": sorted(missing, key=lambda i: int(i.rsplit("-", 1)[1]))[:5],
    }


def lag_report(client: redis.Redis, settings: CommonSettings) -> dict[str, Any]:
    """The workers' lag as they report it once every event is applied: its sum over the
    input partitions, how many partitions report, and how old the report is."""
    time.sleep(6)  # a report or two after the last batch
    raw = {k.decode(): v.decode() for k, v in client.hgetall(settings.keys.lag()).items()}
    updated = float(raw.pop("_updated_at", "0") or 0)
    topic = settings.topic("rating")
    lags = [int(v) for k, v in raw.items() if k.startswith(f"{topic}:")]
    return {"lag_after": sum(lags), "lag_partitions": len(lags),
            "lag_report_age_s": round(time.time() - updated, 1) if updated else None}


def broker_ids(bootstrap: str, topic: str) -> set[str]:
    """Every event id the topic holds, read from the start without a group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    parts = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in parts])
    consumer.seek_to_beginning()
    ids = set()
    for record in consumer:
        try:
            ids.add(str(json.loads(record.value)["event_id"]))
        except (ValueError, KeyError, TypeError):
            continue
    consumer.close()
    return ids


def _oom_errors(client: redis.Redis) -> int:
    """OOM error replies Redis has given since it started (``INFO errorstats``)."""
    stats = client.info("errorstats")
    return int(stats.get("errorstat_OOM", {}).get("count", 0))


def fault(name: str, worker: Worker, rds: DurableRedis, client: redis.Redis,
          broker: KafkaBroker, outage: float) -> None:
    if name == "broker-kill":
        assert broker.pid is not None
        os.killpg(broker.pid, signal.SIGKILL)
        broker.stop()
        time.sleep(outage)
        broker.start()
    elif name in ("kill", "term"):
        worker.signal(signal.SIGKILL if name == "kill" else signal.SIGTERM)
        time.sleep(15)
        worker.start()
    elif name == "redis-kill":
        rds.signal(signal.SIGKILL)
        time.sleep(5)
        rds.start()
    elif name == "redis-freeze":
        rds.signal(signal.SIGSTOP)
        time.sleep(10)
        rds.signal(signal.SIGCONT)
    elif name == "redis-full":
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used + 256 * 1024))
        time.sleep(10)
        client.config_set("maxmemory", "0")
    else:
        raise ValueError(name)


def wait_done(client: redis.Redis, settings: CommonSettings, expected: int,
              quiet_s: float = 60.0) -> None:
    """Until every event is applied, or nothing more was applied for ``quiet_s``."""
    last, since = -1, time.monotonic()
    while True:
        try:
            n = client.xlen(settings.keys.event_log())
        except (redis.RedisError, OSError):
            n = last
        if n >= expected:
            return
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--rate", type=float, default=800.0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--outage", type=float, default=60.0,
                    help="seconds the broker stays down in broker-kill")
    ap.add_argument("--tree", default=str(ROOT), help="checkout whose workers and API run")
    ap.add_argument("--no-api", action="store_true")
    ap.add_argument("--log-level", default="warning", help="of the workers and the API")
    ap.add_argument("--keep", default=None, help="run directory kept after the run (logs)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp, ExitStack() as stack:
        run_dir = Path(args.keep or tmp)
        broker = stack.enter_context(KafkaBroker(log_dir=run_dir))
        rds = DurableRedis(run_dir)
        rds.start()
        stack.callback(rds.stop)
        model_dir = run_dir / "models"
        publish_model(model_dir)
        durable = None
        for name in args.scenarios.split(","):
            if name == "broker-kill" and durable is None:
                store = stack.enter_context(S3Store(log_dir=run_dir / "s3"))
                durable = stack.enter_context(KafkaBroker(
                    port=free_port(), log_dir=run_dir / "broker", storage=store))
            use = durable if name == "broker-kill" and durable is not None else broker
            result = run_scenario(name, args, use, rds, model_dir, run_dir)
            results.append(result)
            print(json.dumps(result))
    cols = ["scenario", "sent", "applied", "lost", "double_counted", "rev_excess", "api_5xx",
            "stale_answers", "api_asked"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
