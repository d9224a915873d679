"""Stream benchmarks on one worker, in one run against the embedded broker and Redis:

- ingestion: all of ml-100k's ratings pre-produced to 4 partitions, then consumed by a raw
  aiokafka consumer (the baseline: no processing) and by one stream worker; events/s of
  each, the ratio, and the consumer lag at the end;
- equivalence: every user's state in Redis against the offline computation over the same
  events (history pairs and fold-in vector);
- freshness: one event at a time for fresh users, produce → the user's vector updated in
  Redis (announced on the user-updated channel), p50/p99.

Run: ``python -m benchmarks.stream [--events N] [--freshness-samples N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from kafka import KafkaProducer

from adapters.kafka import ensure_topics
from adapters.redis_store import UserStateStore
from adapters.settings import CommonSettings
from benchmarks.harness import DATA_DIR, publish_model, rating_messages, stack_env, wait_for, worker
from devstack import DevStack
from recsys_core.confidence import ConfidenceRule
from recsys_core.foldin import fold_in_user
from recsys_core.loaders import load_dataset
from training.matrices import aggregate_pairs
from training.registry import ModelRegistry

PARTITIONS = 4


async def raw_consume(bootstrap: str, topic: str, expected: int) -> float:
    """Seconds a bare aiokafka consumer group takes from its first to its last message."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="raw-baseline",
                                auto_offset_reset="earliest", session_timeout_ms=6000,
                                heartbeat_interval_ms=1000)
    await consumer.start()
    seen, first = 0, None
    try:
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for msgs in batch.values():
                if msgs and first is None:
                    first = time.perf_counter()
                seen += len(msgs)
    finally:
        await consumer.stop()
    return time.perf_counter() - (first or time.perf_counter())


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of a process and all its descendants so far (Linux /proc);
    0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        return 0.0
    return own + sum(cpu_seconds(c) for c in children)


def metric_values(port: int, name: str) -> list[float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--freshness-samples", type=int, default=300)
    ap.add_argument("--workers", type=int, default=1, help="worker processes in the group")
    args = ap.parse_args()
    messages = rating_messages("ml-100k", 0, args.events)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    model_dir = run_dir / "models"
    publish_model(model_dir, fraction=0.8)
    bundle = ModelRegistry(model_dir).load()
    with DevStack(log_dir=run_dir / "logs") as stack:
        settings = CommonSettings(kafka_bootstrap=stack.kafka_bootstrap,
                                  redis_url=stack.redis_url)
        ensure_topics(settings, PARTITIONS)
        producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=20,
                                 batch_size=256 * 1024, acks=1)
        t = time.perf_counter()
        for key, value in messages:
            producer.send(settings.topic("rating"), key=key, value=value)
        producer.flush()
        produce_s = time.perf_counter() - t
        raw_s = asyncio.run(raw_consume(stack.kafka_bootstrap, settings.topic("rating"),
                                        len(messages)))
        r = stack.redis.client()
        log_key = settings.keys.event_log()
        env = stack_env(stack, model_dir, run_dir, RECSYS_STREAM_PARTITIONS=str(PARTITIONS))
        with ExitStack() as workers:
            started = [workers.enter_context(worker(env, run_dir / f"worker-{n}.log"))
                       for n in range(args.workers)]
            ports = [port for _, port in started]
            pids = {"worker": [proc.pid for proc, _ in started], "redis": [stack.redis.pid],
                    "broker": [stack.kafka.pid]}
            wait_for(lambda: r.xlen(log_key) > 0, 120, 0.01)
            t = time.perf_counter()
            cpu0 = {role: sum(map(cpu_seconds, p)) for role, p in pids.items()}
            load = os.getloadavg()
            wait_for(lambda: r.xlen(log_key) >= len(messages), 600, 0.01)
            ingest_s = time.perf_counter() - t
            cpu = {role: sum(map(cpu_seconds, p)) - cpu0[role] for role, p in pids.items()}
            wait_for(lambda: all(metric_values(p, "recsys_stream_consumer_lag")
                                 and max(metric_values(p, "recsys_stream_consumer_lag")) == 0
                                 for p in ports), 30, 0.5)
            lag = max(v for p in ports for v in metric_values(p, "recsys_stream_consumer_lag"))
            busy = sum(v for p in ports
                       for v in metric_values(p, "recsys_stream_batch_seconds_sum"))
            batches = sum(v for p in ports
                          for v in metric_values(p, "recsys_stream_batch_events_count"))
            equal, total, worst = equivalence(stack.redis_url, settings, bundle,
                                              args.events)
            fresh = freshness(stack, settings, args.freshness_samples)
    rate = len(messages) / ingest_s
    raw_rate = len(messages) / raw_s
    print(f"events: {len(messages)} on {PARTITIONS} partitions "
          f"(produced in {produce_s:.1f}s)")
    print(f"ingestion, {args.workers} worker(s): {rate:,.0f} events/s ({ingest_s:.2f}s)")
    print(f"raw aiokafka consumer, same topic: {raw_rate:,.0f} events/s ({raw_s:.2f}s)")
    print(f"ratio worker/raw: {rate / raw_rate:.3f}; consumer lag at the end: {lag:.0f}")
    print(f"processing (validate, Redis, fold-in) took {busy:.2f}s of the {ingest_s:.2f}s, "
          f"in {batches:.0f} batches ({len(messages) / max(batches, 1):.0f} events each)")
    print("CPU during ingestion, s: " + ", ".join(f"{role} {v:.2f}" for role, v in cpu.items())
          + f"; load average at its start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print(f"equivalence: {equal}/{total} users equal to the offline computation "
          f"(max vector difference {worst:.2e})")
    print(f"freshness, produce -> vector updated: p50 {fresh[0] * 1000:.1f} ms, "
          f"p99 {fresh[1] * 1000:.1f} ms, max {fresh[2] * 1000:.1f} ms "
          f"over {args.freshness_samples} events")


def equivalence(url: str, settings: CommonSettings, bundle: object, n_events: int
                ) -> tuple[int, int, float]:
    from recsys_core.artifacts import ModelBundle

    assert isinstance(bundle, ModelBundle)
    ds = load_dataset("ml-100k", DATA_DIR)
    inter = ds.interactions.sort_values("timestamp", kind="stable").iloc[:n_events]
    rule = ConfidenceRule.from_dict(bundle.manifest["confidence_rule"])
    pairs = aggregate_pairs(inter, rule)
    # the stream keeps each user's newest `user_history_cap` movies (ties: higher movie id)
    pairs = (pairs.sort_values(["user_id", "timestamp", "movie_id"])
             .groupby("user_id").tail(settings.user_history_cap))
    store = UserStateStore.from_url(url, keys=settings.keys)
    reg = float(bundle.params["als_regularization"])
    users = sorted(pairs["user_id"].unique())
    snaps = store.read(users, bundle.item_factors.shape[1])
    equal, worst = 0, 0.0
    for uid, snap in zip(users, snaps, strict=True):
        mine = pairs[pairs["user_id"] == uid]
        same_pairs = (set(mine["movie_id"]) == set(snap.pairs) and all(
            snap.pairs[m].rating == r for m, r in zip(mine["movie_id"], mine["rating"],
                                                       strict=True)))
        known = mine[mine["movie_id"].isin(set(bundle.movies.ids))]
        expected = fold_in_user(bundle.item_factors, bundle.yty,
                                bundle.movies.indices(known["movie_id"]),
                                known["confidence"].to_numpy(), reg)
        diff = (float(np.abs(snap.vector - expected).max()) if snap.vector is not None
                else float("inf"))
        worst = max(worst, diff)
        equal += int(same_pairs and diff < 1e-4)
    return equal, len(users), worst


def freshness(stack: DevStack, settings: CommonSettings, samples: int
              ) -> tuple[float, float, float]:
    r = stack.redis.client()
    sub = r.pubsub()
    sub.subscribe(settings.keys.user_updates())
    sub.get_message(timeout=1.0)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=0, acks=1)
    lat = []
    for n in range(samples):
        user = f"fresh-{n}"
        value = json.dumps({"event_id": f"fresh-{n}", "user_id": user, "movie_id": "50",
                            "rating": 5, "occurred_at": "2026-11-24T10:00:00Z"}).encode()
        t = time.perf_counter()
        producer.send(settings.topic("rating"), key=user.encode(), value=value)
        producer.flush()
        deadline = t + 10
        while time.perf_counter() < deadline:
            msg = sub.get_message(timeout=1.0)
            if msg and msg["type"] == "message" and user in json.loads(msg["data"]):
                lat.append(time.perf_counter() - t)
                break
    arr = np.asarray(lat)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), float(arr.max())


if __name__ == "__main__":
    main()
