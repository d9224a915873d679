"""``GET /v1/admin/metrics``: the Prometheus samples of every role as JSON, for ``/ops``.

The API scrapes its own registry and each URL of ``RECSYS_API_METRICS_TARGETS`` (the stream
workers', the trainer's ``/metrics``) and merges them: counters and histograms are summed over
the targets for identical name and labels (as ``sum by`` would in Grafana), gauges keep the
largest value (two workers both reporting a partition's lag, or both their model version,
must not add up). A target that does not answer is reported ``up: false``, never an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import httpx
from fastapi import APIRouter

from serving.metrics import exposition
from serving.promtext import read_samples
from serving.security import KeyPolicy, errors_of, key_dependencies
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_SECONDS = 1.0
#: polls this close together share one scrape
REUSE_SECONDS = 1.0
#: metric types whose samples add up across processes
ADDITIVE = frozenset({"counter", "histogram", "summary", "untyped", "unknown"})

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def parse_samples(text: str) -> list[tuple[str, str, dict[str, str], float]]:
    """``(type, name, labels, value)`` of each sample in Prometheus text ``text``; NaN
    values and ``_created`` timestamps are left out (:mod:`serving.promtext`)."""
    return read_samples(text)


def merge_samples(
    scraped: Iterable[list[tuple[str, str, dict[str, str], float]]],
) -> list[dict[str, Any]]:
    """One sample per name and labels: summed for counters and histograms, the largest value
    for gauges."""
    merged: dict[SampleKey, float] = {}
    for samples in scraped:
        for kind, name, labels, value in samples:
            key = (name, tuple(sorted(labels.items())))
            if key not in merged:
                merged[key] = value
            elif kind in ADDITIVE:
                merged[key] += value
            else:
                merged[key] = max(merged[key], value)
    return [{"name": name, "labels": dict(labels), "value": value}
            for (name, labels), value in sorted(merged.items())]


def metrics_targets(settings: ServingSettings) -> list[str]:
    return [u.strip() for u in settings.api_metrics_targets.split(",") if u.strip()]


async def scrape(client: httpx.AsyncClient, url: str
                 ) -> tuple[dict[str, Any], list[tuple[str, str, dict[str, str], float]]]:
    try:
        resp = await client.get(url)
        resp.raise_for_status()
        samples = parse_samples(resp.text)
    except Exception as exc:  # noqa: BLE001 - any failure (bad URL, HTTP, parse) is "down"
        return {"url": url, "up": False, "error": str(exc) or type(exc).__name__}, []
    return {"url": url, "up": True, "error": None}, samples


async def collect(targets: list[str]) -> dict[str, Any]:
    """The API's registry (the sum over its processes) plus every target, merged (see the
    module docstring)."""
    own = parse_samples(exposition().decode())  # every API process's
    async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_SECONDS) as client:
        results = await asyncio.gather(*(scrape(client, u) for u in targets))
    return {
        "scraped_at": time.time(),
        "targets": [{"url": "self", "up": True, "error": None}] + [r[0] for r in results],
        "samples": merge_samples([own, *(r[1] for r in results)]),
    }


def ops_router(settings: ServingSettings) -> APIRouter:
    """The admin metrics endpoint, behind the same API key as the other admin routes."""
    router = APIRouter()
    targets = metrics_targets(settings)
    down: set[str] = set()  # logged once when a target goes down, once when it is back
    lock = asyncio.Lock()
    kept: dict[str, Any] = {"at": 0.0, "body": None}

    policy = KeyPolicy.from_settings(settings)

    @router.get("/v1/admin/metrics", tags=["admin"],
                dependencies=key_dependencies(policy, "admin"),
                responses=errors_of(policy, "admin"))
    async def admin_metrics() -> dict[str, Any]:
        """Prometheus samples of this API and of ``RECSYS_API_METRICS_TARGETS`` as JSON
        (``{"scraped_at", "targets": [{"url", "up"}], "samples": [{"name", "labels",
        "value"}]}``): counters and histograms summed over targets, gauges their largest
        value. The operator page polls it; polls within a second (several pages open) share
        one scrape."""
        async with lock:
            if time.monotonic() - kept["at"] >= REUSE_SECONDS or kept["body"] is None:
                kept["body"], kept["at"] = await collect(targets), time.monotonic()
            body: dict[str, Any] = kept["body"]
        for target in body["targets"][1:]:
            url = target["url"]
            if not target["up"] and url not in down:
                down.add(url)
                log.warning("metrics target %s is down: %s", url, target["error"])
            elif target["up"] and url in down:
                down.discard(url)
                log.info("metrics target %s is up again", url)
        return body

    return router
