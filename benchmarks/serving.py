"""Serving benchmark: the API (``python -m serving``, one uvicorn process) on the dev broker
and Redis, driven by :mod:`benchmarks.loadgen` from another process over loopback.

Parts (all by default; pick with ``--parts``):
- ``latency``: ml-100k model, every user's state seeded in Redis; requests/s and latency of
  ``GET /v1/users/{u}/recommendations?k=10`` next to the trivial ``GET /healthz`` served the
  same way in the same run (the ratio is the headline figure);
- ``large``: the same on a synthetic 100,000-movie model, with the API's resident memory;
- ``candidates``: candidate scoring (:mod:`recsys_core.candidates`) forced onto the ml-100k
  model, every training user's top-10 next to full scoring: how often it differs, with the
  default candidate sizes and with every size cut to a tenth and a fiftieth (the candidate
  share of a 100,000-movie catalogue is a few per cent);
- ``freshness``: a rating produced to Kafka (one stream worker) → the first API answer
  that reflects it (the rated movie leaves the user's top-10), p50/p99;
- ``protocol-c``: protocol C through the live system: the newest 20 % of ml-100k replayed
  through Kafka, and before each event the API's top-10 for that user is asked; HR@10 and
  MRR@10 next to the offline simulation's on the same split. The versions are the offline
  simulation's, published into the API (a research setup: the deployed trainer plays no
  part in it);
- ``protocol-c-deployed``: protocol C as deployed (:mod:`benchmarks.protocol_c`): the
  stack ``recsys up`` starts, with its own trainer retraining every
  ``--retrain-every`` events (default 1,000), and nothing handed in; next to the offline
  simulation of the same deployment.

``python -m benchmarks.serving [--parts latency,large,freshness,protocol-c]
[--concurrency 16] [--seconds 10] [--protocol-c-events N]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaProducer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from adapters.kafka import ensure_topics
from adapters.redis_store import UserStateStore
from adapters.settings import CommonSettings
from benchmarks.harness import DATA_DIR, ROOT, publish_model, stack_env, wait_for, worker
from devstack import DevStack, free_port
from recsys_core.artifacts import ModelBundle
from recsys_core.loaders import load_dataset
from recsys_core.vocab import Vocabulary
from streams.processor import ModelView, Record, StreamProcessor
from training.registry import ModelRegistry

console = Console()


# ------------------------------------------------------------------ processes


@contextmanager
def api_process(env: dict[str, str], log: Path, cache: bool = False, root: Path = ROOT
                ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m serving`` of the checkout at ``root`` (this one by default)."""
    port = free_port()
    full = {**os.environ, **env, "RECSYS_API_PORT": str(port), "RECSYS_LOG_LEVEL": "warning",
            "RECSYS_API_CACHE_SIZE": "10000" if cache else "0", "PYTHONPATH": str(root)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serving"], env=full, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _status(f"{base}/readyz") == 200 or proc.poll() is not None, 120)
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited; see {log}")
        yield proc, base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def followed(base: str) -> float:
    """Event-log entries the API has read (its ``recsys_api_activity_followed_total``)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("recsys_api_activity_followed_total "):
                return float(line.split()[1])
    return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def loadgen(urls: list[str], concurrency: int, seconds: float, scratch: Path) -> dict[str, Any]:
    url_file = scratch / "urls.txt"
    url_file.write_text("\n".join(urls[1:]))
    out = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", urls[0],
                          "--urls-file", str(url_file), "--concurrency", str(concurrency),
                          "--seconds", str(seconds)], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return dict(json.loads(out.stdout))


# ------------------------------------------------------------------ state


def seed(settings: CommonSettings, bundle: ModelBundle, events: list[dict[str, Any]],
         label: str) -> None:
    """Apply events to Redis as a stream worker would (histories and vectors)."""
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys)
    view = ModelView(bundle)
    processor = StreamProcessor(store, lambda: view)
    step = 2000
    for start in track(range(0, len(events), step), description=label, console=console):
        chunk = events[start : start + step]
        processor.process("rating", [Record(json.dumps(e).encode(), "seed", 0, start + n)
                                     for n, e in enumerate(chunk)])


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def dataset_events(dataset: str, start: int = 0, stop: int | None = None
                   ) -> list[dict[str, Any]]:
    ds = load_dataset(dataset, DATA_DIR)
    inter = ds.interactions.sort_values("timestamp", kind="stable").iloc[start:stop]
    return [{"event_id": f"{ds.name}:{r.user_id}:{r.movie_id}:{int(r.timestamp)}",
             "user_id": str(r.user_id), "movie_id": str(r.movie_id),
             "rating": float(r.rating), "occurred_at": iso(r.timestamp)}
            for r in inter.itertuples(index=False)]


def synthetic_bundle(n_items: int, factors: int = 64, content_dim: int = 64,
                     neighbors: int = 50, seed: int = 0) -> ModelBundle:
    """A model shaped like a trained one over ``n_items`` movies with power-law popularity."""
    rng = np.random.default_rng(seed)
    pop = (1.0 / np.arange(1, n_items + 1) ** 0.9).astype(np.float32)
    pop /= pop.max()
    f = (rng.standard_normal((n_items, factors)) * 0.1).astype(np.float32)
    content = rng.standard_normal((n_items, content_dim)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    # neighbours drawn by popularity, as co-occurrence would
    p = pop / pop.sum()
    idx = rng.choice(n_items, size=(n_items, neighbors), p=p).astype(np.int32)
    scores = rng.random((n_items, neighbors)).astype(np.float32)
    indptr = np.arange(0, n_items * neighbors + 1, neighbors, dtype=np.int64)
    genres = np.array(["Drama", "Comedy", "Action|Thriller", "Romance|Comedy", "Sci-Fi"])
    return ModelBundle(
        version=1,
        movies=Vocabulary([str(i) for i in range(1, n_items + 1)]),
        titles=np.array([f"Synthetic Movie {i} ({1950 + i % 70})"
                         for i in range(1, n_items + 1)]),
        years=(1950 + np.arange(1, n_items + 1) % 70).astype(np.int32),
        genres=genres[np.arange(n_items) % len(genres)],
        item_factors=f,
        yty=(f.T.astype(np.float64) @ f),
        popularity=pop,
        content_vectors=content,
        neighbor_indptr=indptr, neighbor_indices=idx.ravel(), neighbor_scores=scores.ravel(),
        session_indptr=indptr.copy(), session_indices=idx.ravel().copy(),
        session_scores=scores.ravel().copy(),
        rating_item_bias=np.zeros(n_items, np.float32),
        rating_item_factors=(f[:, :32] * 0.5).copy(),
        manifest={"params": {"als_regularization": 0.1, "rating_global_mean": 3.5},
                  "blend_weights": {"cf": 1.0, "item": 1.0, "session": 1.0, "content": 0.1,
                                    "popularity": 0.1}},
    )


# ------------------------------------------------------------------ parts


def latency_part(base: str, users: list[str], concurrency: int, seconds: float,
                 scratch: Path, cached_base: str | None = None) -> dict[str, Any]:
    """The trivial endpoint, then recommendations computed on every request (cache off),
    then, when ``cached_base`` is given, the same requests on an API with its response
    cache on (after the first pass over the users every answer is a cache hit)."""
    urls = [f"/v1/users/{u}/recommendations?k=10" for u in users]
    trivial = loadgen([f"{base}/healthz"], concurrency, seconds, scratch)
    recs = loadgen([base + u for u in urls], concurrency, seconds, scratch)
    single = loadgen([base + u for u in urls], 1, seconds / 2, scratch)
    out = {"trivial": trivial, "recommendations": recs, "recommendations_c1": single,
           "throughput_ratio": recs["rps"] / trivial["rps"]}
    if cached_base is not None:
        for u in urls:  # warm: one pass
            get_json(cached_base + u)
        cached = loadgen([cached_base + u for u in urls], concurrency, seconds, scratch)
        out["recommendations_cached"] = cached
        out["cached_throughput_ratio"] = cached["rps"] / trivial["rps"]
    return out


def freshness_part(settings: CommonSettings, base: str, samples: int,
                   tag: str = "fresh", at: float | None = None) -> dict[str, Any]:
    """Produce a rating of the user's current top-1; time until it leaves the top-10. Users
    and event ids start with ``tag``: a second call with the same tag would send the same
    event ids, which the stream rightly drops as duplicates. ``at``: the events' time
    (default: now); a replay of old events must not see its event clock jump to today."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0, acks=1)
    lat: list[float] = []
    missed: list[int] = []  # samples not reflected within the deadline
    for n in track(range(samples), description="freshness", console=console):
        user = f"{tag}-{n}-{os.getpid()}"
        top = get_json(f"{base}/v1/users/{user}/recommendations?k=10")["items"][0]["movie_id"]
        value = json.dumps({"event_id": f"{user}-1", "user_id": user, "movie_id": top,
                            "rating": 5,
                            "occurred_at": iso(time.time() if at is None else at)}).encode()
        t = time.perf_counter()
        producer.send(settings.topic("rating"), key=user.encode(), value=value)
        producer.flush()
        deadline = t + 10
        while time.perf_counter() < deadline:
            items = get_json(f"{base}/v1/users/{user}/recommendations?k=10")["items"]
            if top not in {it["movie_id"] for it in items}:
                lat.append(time.perf_counter() - t)
                break
            time.sleep(0.002)
        else:
            missed.append(n)
    producer.close()
    a = np.asarray(lat) * 1000
    return {"samples": len(lat), "of": samples, "missed_samples": missed,
            "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def cache_counts(base: str) -> dict[str, float]:
    """The API's response-cache hits and misses so far (from /metrics)."""
    out = {"hit": 0.0, "miss": 0.0}
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            for result in out:
                if line.startswith(f'recsys_api_cache_total{{result="{result}"}}'):
                    out[result] = float(line.split()[-1])
    return out


def stream_ratings(settings: CommonSettings, users: list[str], movies: list[str], rate: float,
                   at: float, stop: threading.Event, sent: list[int]) -> None:
    """Produce ratings of random users and movies at ``rate`` per second until ``stop``;
    appends how many were sent to ``sent``."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, acks=1)
    rng = np.random.default_rng(int(rate))
    start, n = time.perf_counter(), 0
    while not stop.is_set():
        due = int((time.perf_counter() - start) * rate)
        while n < due:
            user = users[int(rng.integers(len(users)))]
            value = json.dumps({
                "event_id": f"mixed-{rate:g}-{n}-{os.getpid()}", "user_id": user,
                "movie_id": movies[int(rng.integers(len(movies)))],
                "rating": int(rng.integers(1, 6)), "occurred_at": iso(at)}).encode()
            producer.send(settings.topic("rating"), key=user.encode(), value=value)
            n += 1
        time.sleep(0.002)
    producer.flush()
    producer.close()
    sent.append(n)


def mixed_part(settings: CommonSettings, base: str, users: list[str], movies: list[str],
               rates: list[float], concurrency: int, seconds: float, scratch: Path,
               at: float) -> list[dict[str, Any]]:
    """Reads of every user's top-10 (response cache on) while ratings of random users stream
    in at ``rates`` events/s through Kafka and a stream worker: each event changes a user's
    state, so that user's next answer is computed. Reports the read rate and latency and
    the share of reads answered from the cache."""
    urls = [f"{base}/v1/users/{u}/recommendations?k=10" for u in users]
    for u in urls:  # warm: every user's answer kept once
        get_json(u)
    out = []
    for rate in rates:
        stop = threading.Event()
        sent: list[int] = []
        thread = threading.Thread(target=stream_ratings, daemon=True, args=(
            settings, users, movies, rate, at, stop, sent))
        before = cache_counts(base)
        thread.start()
        reads = loadgen(urls, concurrency, seconds, scratch)
        stop.set()
        thread.join()
        after = cache_counts(base)
        hits, misses = (after[r] - before[r] for r in ("hit", "miss"))
        out.append({"events_per_second": rate, "events_sent": sum(sent), **reads,
                    "kept_share": hits / max(hits + misses, 1.0)})
    return out


def protocol_c_part(settings: CommonSettings, base: str, events: list[dict[str, Any]],
                    limit: int | None, known: set[str],
                    schedule: list[tuple[int, int, bool]] | None = None,
                    model_dir: Path | None = None) -> dict[str, Any]:
    """Before each replayed event, the API's top-10 for its user; the event is then
    produced and, before that user is asked again, applied (as the offline simulation
    updates the state after each event). With a ``schedule`` of (event, version), that
    version is made current before that event is asked about, and the API's answers are
    awaited until they come from it (the trainer publishing at the same points); and
    before each event, every earlier one must be applied (and, for a model with a
    reranker, read by the API)."""
    switch = {n: (version, trees) for n, version, trees in schedule or []}
    reranked = False
    registry = ModelRegistry(model_dir) if model_dir is not None else None
    client = UserStateStore.from_url(settings.redis_url, keys=settings.keys).r
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0, acks=1)
    sent: dict[str, int] = {}
    base_rev: dict[str, int] = {}
    hits, rr, asked = 0, 0.0, 0
    todo = events[:limit] if limit else events
    log_key = settings.keys.event_log()
    log_base = int(client.xlen(log_key))
    for n, e in enumerate(track(todo, description="protocol C (live)", console=console)):
        user = e["user_id"]
        if n in switch and registry is not None:
            version, reranked = switch[n]
            registry.flip(version)
            wait_for(lambda v=version, u=user: get_json(  # type: ignore[misc]
                f"{base}/v1/users/{u}/recommendations?k=1")["model_version"] == v, 60, 0.05)
        if switch:
            # every earlier event applied and read by the API (the reranker's clock and
            # movie activity), as in the offline simulation and in real time, where
            # events are seconds apart against a freshness of tens of milliseconds
            wait_for(lambda k=log_base + n: int(client.xlen(log_key)) >= k, 30, 0.001)
        if reranked:
            try:
                wait_for(lambda k=log_base + n: followed(base) >= k, 30, 0.001)
            except TimeoutError:
                raise TimeoutError(f"the API followed {followed(base):.0f} event-log entries "
                                   f"of {log_base + n}") from None
        if user not in base_rev:
            raw = client.hget(settings.keys.meta(user), "rev")
            base_rev[user] = int(raw) if raw else 0
        want = base_rev[user] + sent.get(user, 0)
        if sent.get(user):
            wait_for(lambda u=user, w=want: int(  # type: ignore[misc]
                client.hget(settings.keys.meta(u), "vector_rev") or -1) >= w, 30, 0.001)
        items = get_json(f"{base}/v1/users/{user}/recommendations?k=10")["items"]
        ranked = [it["movie_id"] for it in items]
        asked += e["movie_id"] in known
        if e["movie_id"] in ranked:
            hits += 1
            rr += 1.0 / (ranked.index(e["movie_id"]) + 1)
        producer.send(settings.topic("rating"), key=user.encode(),
                      value=json.dumps(e).encode())
        producer.flush()
        sent[user] = sent.get(user, 0) + 1
    producer.close()
    return {"events": asked, "hr@10": hits / asked, "mrr@10": rr / asked}


def offline_protocol_c(model_dir: Path, limit: int | None,
                       retrain_every: int = 0, warmup: float = 0.5) -> dict[str, Any]:
    """The offline simulation; the model it trains (blend weights fitted on the newest
    training events) is published for the live run, so both score the same model.

    With ``retrain_every``, the simulated live system's models (retrained, with the
    reranker's trees) are saved as versions too, with the replay event at which each
    started serving (``schedule``), so that the live run can switch at the same events."""
    from training.evaluation.protocols import protocol_stream

    ds = load_dataset("ml-100k", DATA_DIR)
    registry = ModelRegistry(model_dir)
    schedule: list[tuple[int, int, bool]] = []

    def stage(n: int, bundle: ModelBundle) -> None:
        bundle.version = registry.next_version()
        registry.save(bundle)
        schedule.append((n, bundle.version, "rerank_roots" in bundle.extra))

    result = protocol_stream(ds, limit=limit, on_model=registry.publish,
                             progress=lambda msg: console.print(msg),
                             retrain_every=retrain_every, warmup=warmup,
                             on_live_model=stage if retrain_every else None)
    out = {"events": result["replay_events"], **result["models"]["live_hybrid"]}
    if retrain_every:
        out["live_system"] = result["models"]["live_system"]
        out["schedule"] = schedule
    return out


def candidates_part(model_dir: Path, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Top-10 of candidate scoring against full scoring for every user of ``events``."""
    from recsys_core.candidates import CandidateIndex, recommend_candidates
    from recsys_core.scoring import BlendWeights, recommend
    from recsys_core.userstate import PairState, PairTable, history_from_pairs
    from serving.model import ServingModel

    bundle = ModelRegistry(model_dir).load()
    model = ServingModel(bundle)
    weights = BlendWeights.from_dict(bundle.manifest.get("blend_weights", {}))
    pairs: dict[str, dict[str, PairState]] = {}
    for e in events:
        ts = time.mktime(time.strptime(e["occurred_at"], "%Y-%m-%dT%H:%M:%SZ"))
        pairs.setdefault(e["user_id"], {})[e["movie_id"]] = PairState(ts, e["rating"], None,
                                                                     ts)
    histories = [history_from_pairs(PairTable.from_pairs(p), bundle, model.rule)[0]
                 for p in pairs.values()]
    sizes = {"default": {}, "tenth": dict(popular=50, stage_popular=20, cf_count=100,
                                          content_count=30, neighbor_count=50),
             "fiftieth": dict(popular=10, stage_popular=4, cf_count=20, content_count=6,
                              neighbor_count=10)}
    out: dict[str, Any] = {"users": len(histories), "items": bundle.n_items,
                           "weights": {k: v for k, v in weights.to_dict().items()
                                       if not k.endswith(("_decay", "_length")) and v}}
    fulls = [recommend(bundle, h, weights, 10)[0].tolist() for h in histories]
    for name, kw in sizes.items():
        index = CandidateIndex.build(bundle, **kw)  # type: ignore[arg-type]
        same = overlap = 0
        for h, full in zip(histories, fulls, strict=True):
            found = recommend_candidates(bundle, index, h, weights, 10)
            got = full if found is None else found[0].tolist()
            same += got == full
            overlap += len(set(got) & set(full))
        out[name] = {"identical_top10": same / len(histories),
                     "mean_overlap": overlap / len(histories) / 10}
    return out


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="latency,large,freshness,protocol-c",
                    help="comma-separated: latency, large, candidates, freshness, mixed, "
                         "protocol-c, protocol-c-deployed")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--freshness-samples", type=int, default=200)
    ap.add_argument("--protocol-c-events", type=int, default=None,
                    help="replay only the first N events of the newest 20 %% (all: unset)")
    ap.add_argument("--large-items", type=int, default=100_000)
    ap.add_argument("--retrain-every", type=int, default=0,
                    help="protocol C: the live system retrained after every N events with "
                         "its reranker, versions switched at the same events live and "
                         "offline (0: the model of the training 80 %% throughout)")
    ap.add_argument("--plain-model", action="store_true",
                    help="latency: serve a model with the default blend weights and no "
                         "reranker (default: as the trainer publishes it, weights fitted, "
                         "with the reranker's trees)")
    ap.add_argument("--mixed-rates", default="50,200,1000",
                    help="mixed: rating events per second streamed in while reading")
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="latency: also measure the API of another checkout (e.g. a git "
                         "worktree of an earlier commit) on the same model, Redis and "
                         "requests, in the same run")
    ap.add_argument("--warmup", type=float, default=0.5,
                    help="with --retrain-every: where in the training events the simulated "
                         "live system starts (see protocol C)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {}
    if "protocol-c-deployed" in parts:
        from benchmarks import protocol_c

        results["protocol_c_deployed"] = protocol_c.run(
            "ml-100k", args.retrain_every or 1000, args.protocol_c_events)
        parts.discard("protocol-c-deployed")
        if not parts:
            report(results)
            return
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp, DevStack() as stack:
        scratch = Path(tmp)
        times = np.sort(load_dataset("ml-100k", DATA_DIR).interactions["timestamp"].to_numpy())
        split = int(round(0.8 * times.size))
        # with the live system's reranker, probe events carry the training data's end as
        # their time: the event clock (the reranker's "now") must not jump to today
        probe_at = float(times[split - 1]) if args.retrain_every else None
        if parts & {"latency", "freshness", "protocol-c", "candidates", "mixed"}:
            model_dir = scratch / "models"
            if "protocol-c" in parts:
                console.print("protocol C offline (trains the model served below) ...")
                results["protocol_c_offline"] = offline_protocol_c(
                    model_dir, args.protocol_c_events, args.retrain_every, args.warmup)
            else:
                console.print("training on the oldest 80 % of ml-100k"
                              f"{'' if args.plain_model else ' as the trainer does'} ...")
                publish_model(model_dir, fraction=0.8, as_trainer=not args.plain_model)
            env = stack_env(stack, model_dir, scratch, RECSYS_KEY_PREFIX="bench",
                            RECSYS_TOPIC_PREFIX="bench.", RECSYS_API_MODEL_POLL_SECONDS="0.2")
            settings = CommonSettings(kafka_bootstrap=stack.kafka_bootstrap,
                                      redis_url=stack.redis_url, key_prefix="bench",
                                      topic_prefix="bench.")
            ensure_topics(settings, 4)
            bundle = ModelRegistry(model_dir).load()
            if "candidates" in parts:
                console.print("candidate scoring against full scoring ...")
                results["candidates"] = candidates_part(model_dir,
                                                        dataset_events("ml-100k", 0, split))
            seed(settings, bundle, dataset_events("ml-100k", 0, split), "seeding ml-100k users")
            users = sorted({e["user_id"] for e in dataset_events("ml-100k", 0, split)})
            with api_process(env, scratch / "api.log") as (proc, base):
                if "latency" in parts:
                    console.print("latency: ml-100k ...")
                    with api_process(env, scratch / "api-cached.log", cache=True) as (_, cb):
                        results["latency"] = latency_part(base, users, args.concurrency,
                                                          args.seconds, scratch, cb)
                    if args.baseline_tree is not None:
                        console.print(f"latency: the API of {args.baseline_tree} ...")
                        with api_process(env, scratch / "api-baseline.log",
                                         root=args.baseline_tree) as (_, bb):
                            results["latency_baseline"] = latency_part(
                                bb, users, args.concurrency, args.seconds, scratch)
                        results["latency_baseline"]["tree"] = str(args.baseline_tree)
                    results["latency"]["api_rss_mb"] = rss_mb(proc.pid)
                    results["latency"]["model"] = {
                        "version": bundle.version, "reranker": "rerank_roots" in bundle.extra,
                        "blend_weights": bundle.manifest.get("blend_weights", {})}
                if parts & {"freshness", "protocol-c", "mixed"}:
                    with worker({**env, "RECSYS_STREAM_APP_ID": "bench-serving"},
                                scratch / "worker.log") as (wproc, wport):
                        wait_for(lambda: _status(f"http://127.0.0.1:{wport}/metrics") == 200,
                                 120)
                        # the first join: wait until an event goes through
                        freshness_part(settings, base, 1, tag="warm-up", at=probe_at)
                        if "freshness" in parts:
                            results["freshness"] = freshness_part(
                                settings, base, args.freshness_samples, at=probe_at)
                        if "mixed" in parts:
                            console.print("mixed: reads while ratings stream in ...")
                            with api_process(env, scratch / "api-mixed.log",
                                             cache=True) as (_, mb):
                                trivial = loadgen([f"{mb}/healthz"], args.concurrency,
                                                  args.seconds, scratch)
                                results["mixed"] = {"trivial": trivial, "runs": mixed_part(
                                    settings, mb, users, list(bundle.movies.ids),
                                    [float(r) for r in args.mixed_rates.split(",")],
                                    args.concurrency, args.seconds, scratch,
                                    at=float(times[split - 1]))}
                        if "protocol-c" in parts:
                            results["protocol_c_live"] = protocol_c_part(
                                settings, base, dataset_events("ml-100k", split),
                                args.protocol_c_events, set(bundle.movies.ids),
                                results["protocol_c_offline"].get("schedule"), model_dir)
        if "large" in parts:
            large_dir = scratch / "large"
            console.print(f"synthetic {args.large_items:,}-movie model ...")
            bundle = synthetic_bundle(args.large_items)
            ModelRegistry(large_dir).publish(bundle)
            lsettings = CommonSettings(kafka_bootstrap=stack.kafka_bootstrap,
                                       redis_url=stack.redis_url, key_prefix="large",
                                       topic_prefix="large.")
            rng = np.random.default_rng(1)
            p = bundle.popularity / bundle.popularity.sum()
            events = []
            for u in range(2000):
                for n, m in enumerate(rng.choice(args.large_items, 50, replace=False, p=p)):
                    events.append({"event_id": f"l{u}-{n}", "user_id": f"l{u}",
                                   "movie_id": str(m + 1), "rating": float(rng.integers(1, 6)),
                                   "occurred_at": iso(1.6e9 + u * 1000 + n)})
            seed(lsettings, bundle, events, "seeding 2,000 synthetic users")
            env = stack_env(stack, large_dir, scratch, RECSYS_KEY_PREFIX="large",
                            RECSYS_TOPIC_PREFIX="large.")
            with api_process(env, scratch / "api-large.log") as (proc, base):
                idle = rss_mb(proc.pid)
                results["large"] = latency_part(base, [f"l{u}" for u in range(2000)],
                                                args.concurrency, args.seconds, scratch)
                results["large"]["items"] = args.large_items
                results["large"]["api_rss_mb_idle"] = idle
                results["large"]["api_rss_mb"] = rss_mb(proc.pid)
                t = time.perf_counter()
                for q in ("synthetic movie 4242", "synthtic movie 99", "movie 123"):
                    get_json(f"{base}/v1/movies/search?q={q.replace(' ', '%20')}")
                results["large"]["search_ms"] = (time.perf_counter() - t) / 3 * 1000
    report(results)


def report(results: dict[str, Any]) -> None:
    t = Table(title="serving benchmark")
    for col in ("part", "figure", "value"):
        t.add_column(col)

    def lat_rows(name: str, r: dict[str, Any]) -> None:
        for key in ("trivial", "recommendations", "recommendations_c1",
                    "recommendations_cached"):
            if key not in r:
                continue
            x = r[key]
            t.add_row(name, f"{key} (c={x['concurrency']})",
                      f"{x['rps']:,.0f} req/s, p50 {x['p50_ms']:.2f} ms, "
                      f"p99 {x['p99_ms']:.2f} ms, statuses {x['statuses']}")
        t.add_row(name, "throughput ratio (recs / trivial)", f"{r['throughput_ratio']:.2f}")
        if "cached_throughput_ratio" in r:
            t.add_row(name, "throughput ratio, cached (recs / trivial)",
                      f"{r['cached_throughput_ratio']:.2f}")
        for key in ("api_rss_mb_idle", "api_rss_mb", "search_ms"):
            if key in r:
                t.add_row(name, key, f"{r[key]:.1f}")

    if "latency" in results:
        lat_rows("ml-100k", results["latency"])
        if "latency_baseline" in results:
            lat_rows(f"baseline {results['latency_baseline']['tree']}",
                     results["latency_baseline"])
        m = results["latency"].get("model", {})
        if m:
            t.add_row("ml-100k", "served model",
                      f"version {m['version']}, reranker: {'yes' if m['reranker'] else 'no'}")
    if "large" in results:
        lat_rows(f"{results['large']['items']:,} movies", results["large"])
    if "mixed" in results:
        m = results["mixed"]
        triv = m["trivial"]["rps"]
        t.add_row("mixed", f"trivial (c={m['trivial']['concurrency']})", f"{triv:,.0f} req/s")
        for r in m["runs"]:
            t.add_row("mixed", f"reads with {r['events_per_second']:g} events/s "
                      f"(c={r['concurrency']})",
                      f"{r['rps']:,.0f} req/s ({r['rps'] / triv:.2f} of trivial), p50 "
                      f"{r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, kept "
                      f"{r['kept_share']:.1%}, {r['events_sent']:,} events")
    if "candidates" in results:
        c = results["candidates"]
        for name in ("default", "tenth", "fiftieth"):
            t.add_row("candidates", f"top-10 vs full scoring, {name} sizes",
                      f"identical {c[name]['identical_top10']:.3f}, overlap "
                      f"{c[name]['mean_overlap']:.3f} ({c['users']} users)")
    if "freshness" in results:
        f = results["freshness"]
        t.add_row("freshness", "event → next answer reflects it",
                  f"p50 {f['p50_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms, max {f['max_ms']:.0f} "
                  f"ms ({f['samples']}/{f['of']})")
    if "protocol_c_deployed" in results:
        for part in ("offline", "live"):
            c = results["protocol_c_deployed"][part]
            t.add_row("protocol C", f"as deployed, {part}",
                      f"HR@10 {c['hr@10']:.4f}, MRR@10 {c['mrr@10']:.4f} over "
                      f"{c['scored']:,}")
    if "protocol_c_live" in results:
        c = results["protocol_c_live"]
        t.add_row("protocol C", "live (API + Kafka + worker)",
                  f"HR@10 {c['hr@10']:.4f}, MRR@10 {c['mrr@10']:.4f} over {c['events']:,}")
    if "protocol_c_offline" in results:
        c = results["protocol_c_offline"]
        t.add_row("protocol C", "offline simulation (same model)",
                  f"HR@10 {c['hr@10']:.4f}, MRR@10 {c['mrr@10']:.4f} over {c['events']:,}")
        if "live_system" in c:
            ls = c["live_system"]
            t.add_row("protocol C", "offline, live system (same versions)",
                      f"HR@10 {ls['hr@10']:.4f}, MRR@10 {ls['mrr@10']:.4f}")
    console.print(t)
    console.print_json(json.dumps(results))


if __name__ == "__main__":
    main()
