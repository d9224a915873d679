"""Protocol C as deployed: the stack ``recsys up`` starts, its own trainer, an outside client.

``python -m benchmarks.protocol_c [--dataset ml-100k] [--train-after-events 1000]
[--limit N] [--parts offline,live]``

- ``live``: :class:`devstack.stack.Stack` starts the broker, Redis, version 1 (trained on
  the oldest 80 %), the seeded users, one stream worker, the periodic trainer
  (``RECSYS_TRAIN_AFTER_EVENTS``) and the API, exactly as ``recsys up --no-replay`` does.
  Nothing else is handed in: no versions, no warm-up. The newest 20 % are then produced
  to Kafka by a plain kafka-python producer in the wire format (``ratings.v1``, keyed by
  user). Before each event the API is asked for the user's top 10 (its default surface,
  seen movies excluded); a hit is scored when the event's movie is in it, and every
  recommended movie the user had already rated is counted (it must be none).
- ``offline``: :func:`training.evaluation.deployed.simulate_deployment`, the same
  deployment in process: the trainer's own function and settings at the same events.

Pacing. Before each question every earlier event is applied (and, once the serving version
has a reranker, read by the API's activity follower), as in real time, where events are
seconds apart and freshness is tens of milliseconds. After every N-th event the replay
waits until the trainer has read those N events from the archived event log, run, and
(when its gate passed) the API serves the new version: in real time a run takes seconds
against minutes of events. So live and offline see the same versions at the same events.
The trainer's clock trigger is set far out (``RECSYS_TRAIN_EVERY_MINUTES=600``) so that
only the event count starts a run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import redis
from kafka import KafkaProducer
from rich.console import Console
from rich.progress import track

from benchmarks.harness import DATA_DIR, wait_for
from devstack import free_port
from devstack.stack import Stack, StackOptions
from devstack.stack_options import settings_from_env
from recsys_core.loaders import load_dataset
from training.evaluation.deployed import event_id, simulate_deployment
from training.evaluation.splits import temporal_split
from training.registry import ModelRegistry
from training.settings import TrainerSettings
from training.trainer import count_log_events

console = Console()
K = 10
FRACTION = 0.8


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def followed(base: str) -> float:
    """Event-log entries the API's activity follower has read."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("recsys_api_activity_followed_total "):
                return float(line.split()[1])
    return 0.0


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def stable(read: Any, quiet: float = 1.0, timeout: float = 60.0) -> float:
    """``read()`` once it has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return float(last)
    raise TimeoutError("the value kept changing")


def live_environ(train_after: int) -> dict[str, str]:
    import os

    return {**os.environ, "RECSYS_TRAIN_AFTER_EVENTS": str(train_after),
            "RECSYS_TRAIN_EVERY_MINUTES": "600"}


def run_live(dataset: str, train_after: int, limit: int | None, scratch: Path
             ) -> dict[str, Any]:
    ds = load_dataset(dataset, DATA_DIR)
    train, replay = temporal_split(ds.interactions, FRACTION)
    if limit:
        replay = replay.iloc[:limit]
    seen: dict[str, set[str]] = {}
    for u, m in zip(train["user_id"].astype(str), train["movie_id"].astype(str), strict=True):
        seen.setdefault(u, set()).add(m)
    environ = live_environ(train_after)
    options = StackOptions(dataset=dataset, data_dir=DATA_DIR, train_fraction=FRACTION,
                           replay=False, api_port=free_port(), run_dir=scratch / "run")
    stack = Stack(options, environ=environ, on_phase=lambda p: console.print(f"stack: {p}"))
    try:
        stack.start()
        return _replay(stack, ds.name, replay, seen, train_after)
    finally:
        stack.stop()


def _replay(stack: Stack, name: str, replay: Any, seen: dict[str, set[str]],
            train_after: int) -> dict[str, Any]:
    base = stack.addresses.api
    common = settings_from_env(stack.env())
    keys, topic = common.keys, common.topic("rating")
    client = redis.Redis.from_url(stack.redis_url)
    registry = ModelRegistry(stack.run.models)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=0, acks=1)
    known = set(registry.load().movies.ids)
    version = registry.current_version() or 1
    reranked = False
    follow_base, produced_since = 0.0, 0
    base_rev: dict[str, int] = {}
    sent: dict[str, int] = {}
    ranks: list[int] = []
    repeats = 0
    runs: list[dict[str, Any]] = []
    rows = list(replay.itertuples(index=False))
    started = time.perf_counter()
    for n, r in enumerate(track(rows, description="protocol C (deployed, live)",
                                console=console)):
        user, movie = str(r.user_id), str(r.movie_id)
        if n and n % train_after == 0:
            wait_for(lambda k=n: count_log_events(stack.run.eventlog) >= k, 300, 0.2)
            expected = max(registry.versions()) + 1
            wait_for(lambda v=expected: max(registry.versions()) >= v, 600, 0.2)
            published = registry.current_version() == expected
            runs.append({"after_events": n, "version": expected, "published": published})
            if published:
                version = expected
                wait_for(lambda u=user, v=version: get_json(  # type: ignore[misc]
                    f"{base}/v1/users/{u}/recommendations?k=1")["model_version"] == v,
                    120, 0.05)
                was = reranked
                reranked = "rerank_roots" in registry.load(version).extra
                if reranked and not was:
                    # the follower starts with the first reranked answer and reads what
                    # the stream still retains; count from when it is idle
                    follow_base, produced_since = stable(lambda: followed(base)), 0
        if reranked:
            wait_for(lambda k=follow_base + produced_since: followed(base) >= k, 60, 0.001)
        if user not in base_rev:
            raw = client.hget(keys.meta(user), "rev")
            base_rev[user] = int(raw) if raw else 0
        if sent.get(user):
            want = base_rev[user] + sent[user]
            wait_for(lambda u=user, w=want: int(  # type: ignore[misc]
                client.hget(keys.meta(u), "vector_rev") or -1) >= w, 60, 0.001)
        got = get_json(f"{base}/v1/users/{user}/recommendations?k={K}")
        items = [it["movie_id"] for it in got["items"]]
        repeats += len(set(items) & seen.get(user, set()))
        ranks.append(items.index(movie) if movie in items else (K if movie in known else -1))
        value = {"event_id": event_id(name, r.user_id, r.movie_id, r.timestamp),
                 "user_id": user, "movie_id": movie, "rating": float(r.rating),
                 "occurred_at": iso(r.timestamp)}
        producer.send(topic, key=user.encode(), value=json.dumps(value).encode())
        producer.flush()
        sent[user] = sent.get(user, 0) + 1
        seen.setdefault(user, set()).add(movie)
        produced_since += 1
    producer.close()
    r_ = np.asarray([x for x in ranks if x >= 0])
    return {"events": len(rows), "scored": int(r_.size),
            "hr@10": float(np.mean(r_ < K)), "mrr@10": float(np.mean(np.where(
                r_ < K, 1.0 / (r_ + 1.0), 0.0))),
            "recommended_already_rated": repeats, "runs": runs,
            "final_version": version, "seconds": time.perf_counter() - started,
            "ranks": ranks}


def run_offline(dataset: str, train_after: int, limit: int | None, scratch: Path
                ) -> dict[str, Any]:
    settings = TrainerSettings(dataset=dataset, data_dir=DATA_DIR,
                               train_after_events=train_after)
    return simulate_deployment(settings, scratch / "offline-models", FRACTION, limit,
                               progress=lambda m: console.print(m))


def compare(offline: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    a, b = np.asarray(offline["ranks"]), np.asarray(live["ranks"])
    n = min(a.size, b.size)
    a, b = a[:n], b[:n]
    both = (a >= 0) & (b >= 0)
    return {"events": int(both.sum()), "same_hit": int(((a < K) == (b < K))[both].sum()),
            "same_rank": int((a == b)[both].sum()),
            "hr_difference": float(np.mean(b[both] < K) - np.mean(a[both] < K))}


def run(dataset: str, train_after: int, limit: int | None,
        parts: frozenset[str] = frozenset({"offline", "live"}),
        keep_ranks: bool = False) -> dict[str, Any]:
    """Both parts (or those in ``parts``) and, with both, their agreement event by event;
    the per-event ranks are left out of the result unless ``keep_ranks``."""
    results: dict[str, Any] = {"dataset": dataset, "train_after_events": train_after}
    with tempfile.TemporaryDirectory(prefix="bench-protocol-c-") as tmp:
        scratch = Path(tmp)
        if "offline" in parts:
            results["offline"] = run_offline(dataset, train_after, limit, scratch)
        if "live" in parts:
            results["live"] = run_live(dataset, train_after, limit, scratch)
    if "offline" in results and "live" in results:
        results["agreement"] = compare(results["offline"], results["live"])
    for part in ("offline", "live"):
        if part in results and not keep_ranks:
            results[part].pop("ranks", None)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--train-after-events", type=int, default=1000,
                    help="RECSYS_TRAIN_AFTER_EVENTS of the deployed trainer")
    ap.add_argument("--limit", type=int, default=None,
                    help="replay only the first N events of the newest 20 %%")
    ap.add_argument("--parts", default="offline,live")
    ap.add_argument("--out", type=Path, default=None,
                    help="write the results as JSON, with each event's rank")
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("OFFLINE", "LIVE"),
                    help="instead of running: the agreement of two --out files (the parts "
                         "run as separate processes)")
    args = ap.parse_args()
    if args.compare:
        off, liv = (json.loads(p.read_text()) for p in args.compare)
        console.print_json(json.dumps(compare(off["offline"], liv["live"])))
        return
    results = run(args.dataset, args.train_after_events, args.limit,
                  frozenset(args.parts.split(",")), keep_ranks=args.out is not None)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    for part in ("offline", "live"):
        if part in results:
            results[part].pop("ranks", None)
    for part in ("offline", "live"):
        if part in results:
            r = results[part]
            extra = (f", recommended already rated: {r['recommended_already_rated']}"
                     if part == "live" else "")
            console.print(f"{part}: HR@10 {r['hr@10']:.4f}, MRR@10 {r['mrr@10']:.4f} over "
                          f"{r['scored']:,} events{extra}")
    if "agreement" in results:
        console.print(f"agreement: {results['agreement']}")
    console.print_json(json.dumps(results))


if __name__ == "__main__":
    main()
