"""Prometheus metrics of the API (``recsys_api_*``), exposed on ``GET /metrics``.

With several API processes (``RECSYS_API_PROCESSES``) ``python -m serving`` sets
``PROMETHEUS_MULTIPROC_DIR`` before it starts them: each process writes its samples to its
own files there and :func:`exposition` reads them all (prometheus_client's multiprocess
mode), so whichever process answers a scrape gives the sum over processes and a counter
never goes backwards between scrapes. The gauges say how they combine (the largest value
over live processes).
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUEST_SECONDS = Histogram(
    "recsys_api_request_seconds", "Request time by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
FALLBACKS = Counter("recsys_api_fallbacks_total", "Recommendations answered by a fallback, "
                    "by reason", ["reason"])
MODEL_VERSION = Gauge("recsys_api_model_version", "Model version the API serves",
                      multiprocess_mode="livemax")
MODEL_LOADED_AT = Gauge("recsys_api_model_loaded_timestamp_seconds",
                        "When the served model version was loaded",
                        multiprocess_mode="livemax")
BLEND_SECONDS = Histogram(
    "recsys_api_blend_component_seconds", "Time to score one blend component", ["component"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05))
EVENTS = Counter("recsys_api_events_total", "Events posted to the API, by type and outcome",
                 ["type", "outcome"])
DEPENDENCY_ERRORS = Counter("recsys_api_dependency_errors_total",
                            "Calls to Redis or the broker that failed", ["dependency"])
CACHE = Counter("recsys_api_cache_total", "Recommendation requests answered from the response "
                "cache (hit) or computed (miss)", ["result"])
ACTIVITY_FOLLOWED = Counter("recsys_api_activity_followed_total",
                            "Event-log entries the API has read into the movie activity "
                            "(the reranker's day and week counts)")


def multiprocess_dir() -> str | None:
    """The directory of the multiprocess samples, or None with one process."""
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> bytes:
    """The Prometheus text of every API process (one registry with one process)."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_exit() -> None:
    """A process stops: its live gauges stop counting (its counters stay in the sum)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
