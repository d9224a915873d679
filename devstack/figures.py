"""Live figures of a running stack, scraped from each role's Prometheus ``/metrics``.

Metric names are those of ``streams/metrics.py`` (``recsys_stream_*``), ``training/trainer.py``
(``recsys_trainer_*``) and ``serving/metrics.py`` (``recsys_api_*``). Rates come from two
scrapes: :class:`FigureTracker` keeps the previous one of each role.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by (sample name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def scrape(url: str, timeout: float = 1.0) -> Samples | None:
    """The samples at ``url``, or None when it does not answer."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return parse_metrics(response.text)
    except ValueError:
        return None


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= set(lab))


def value(samples: Samples, name: str) -> float | None:
    found = [v for (n, _), v in samples.items() if n == name]
    return max(found) if found else None


@dataclass
class RoleFigures:
    """What one role reports; None where it does not apply or did not answer."""

    up: bool = False
    applied: float | None = None  # events applied (workers)
    applied_per_s: float | None = None
    invalid: float | None = None  # dead-lettered (workers)
    lag: float | None = None  # messages not yet processed (workers)
    model_version: int | None = None  # folded in (workers), published (trainer), served (API)
    trainer_runs: float | None = None
    requests: float | None = None  # API requests answered
    requests_per_s: float | None = None
    healthy: bool | None = None  # a worker's /healthz: consuming and applying


@dataclass
class StackFigures:
    roles: dict[str, RoleFigures] = field(default_factory=dict)

    def _sum(self, attr: str) -> float | None:
        values = [getattr(f, attr) for f in self.roles.values() if getattr(f, attr) is not None]
        return sum(values) if values else None

    @property
    def applied(self) -> float | None:
        return self._sum("applied")

    @property
    def applied_per_s(self) -> float | None:
        return self._sum("applied_per_s")

    @property
    def lag(self) -> float | None:
        return self._sum("lag")

    @property
    def requests_per_s(self) -> float | None:
        return self._sum("requests_per_s")


def role_figures(kind: str, samples: Samples | None) -> RoleFigures:
    if samples is None:
        return RoleFigures()
    out = RoleFigures(up=True)
    version: float | None = None
    if kind == "worker":
        out.applied = total(samples, "recsys_stream_events_total", outcome="applied")
        out.invalid = total(samples, "recsys_stream_events_total", outcome="invalid")
        out.lag = total(samples, "recsys_stream_consumer_lag")
        version = value(samples, "recsys_stream_model_version")
    elif kind == "trainer":
        out.trainer_runs = total(samples, "recsys_trainer_runs_total")
        version = value(samples, "recsys_trainer_published_version")
    elif kind == "api":
        out.requests = total(samples, "recsys_api_request_seconds_count")
        version = value(samples, "recsys_api_model_version")
    out.model_version = int(version) if version else None
    return out


def worker_healthy(metrics_url: str) -> bool:
    """A worker's ``/healthz`` (next to its ``/metrics``) answers 200."""
    try:
        return httpx.get(metrics_url.rsplit("/", 1)[0] + "/healthz", timeout=1.0
                         ).status_code == 200
    except httpx.HTTPError:
        return False


class FigureTracker:
    """Scrapes every role with a metrics URL and turns counters into rates."""

    def __init__(self) -> None:
        self._previous: dict[str, tuple[float, RoleFigures]] = {}

    def collect(self, roles: Iterable[Mapping[str, Any]]) -> StackFigures:
        """``roles`` as in ``stack.json`` (name, kind, metrics_url)."""
        figures = StackFigures()
        for role in roles:
            url = role.get("metrics_url")
            if not url:
                continue
            now = time.monotonic()
            current = role_figures(str(role["kind"]), scrape(str(url)))
            if current.up and role["kind"] == "worker":
                current.healthy = worker_healthy(str(url))
            before = self._previous.get(str(role["name"]))
            if current.up:
                if before is not None and now > before[0]:
                    seconds = now - before[0]
                    current.applied_per_s = _rate(current.applied, before[1].applied, seconds)
                    current.requests_per_s = _rate(current.requests, before[1].requests,
                                                   seconds)
                self._previous[str(role["name"])] = (now, current)
            figures.roles[str(role["name"])] = current
        return figures


def _rate(now: float | None, before: float | None, seconds: float) -> float | None:
    if now is None or before is None:
        return None
    return max(now - before, 0.0) / seconds
