"""``serving.ops``: the samples ``/v1/admin/metrics`` returns, merged over the scraped roles."""

from __future__ import annotations

import asyncio
import math
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from devstack import free_port
from serving.ops import collect, merge_samples, parse_samples

TEXT = """\
# HELP t_events_total Events
# TYPE t_events_total counter
t_events_total{type="rating",outcome="applied"} 3.0
t_events_created{type="rating",outcome="applied"} 1.7e9
# HELP t_lag Lag
# TYPE t_lag gauge
t_lag{partition="0"} 5.0
t_lag{partition="1"} NaN
"""


def test_parse_samples_keeps_types_and_leaves_out_created_and_nan() -> None:
    assert parse_samples(TEXT) == [
        ("counter", "t_events_total", {"type": "rating", "outcome": "applied"}, 3.0),
        ("gauge", "t_lag", {"partition": "0"}, 5.0),
    ]


def test_merge_sums_counters_and_histograms_and_keeps_the_largest_gauge() -> None:
    worker_a = [("counter", "c_total", {"k": "x"}, 3.0),
                ("histogram", "h_bucket", {"le": "0.1"}, 2.0),
                ("gauge", "lag", {"p": "0"}, 7.0),
                ("gauge", "version", {}, 4.0)]
    worker_b = [("counter", "c_total", {"k": "x"}, 4.0),
                ("counter", "c_total", {"k": "y"}, 1.0),
                ("histogram", "h_bucket", {"le": "0.1"}, 5.0),
                ("gauge", "lag", {"p": "0"}, 2.0),
                ("gauge", "version", {}, 5.0)]
    merged = {(s["name"], tuple(sorted(s["labels"].items()))): s["value"]
              for s in merge_samples([worker_a, worker_b])}
    assert merged == {
        ("c_total", (("k", "x"),)): 7.0,
        ("c_total", (("k", "y"),)): 1.0,
        ("h_bucket", (("le", "0.1"),)): 7.0,
        ("lag", (("p", "0"),)): 7.0,
        ("version", ()): 5.0,
    }


def test_collect_reports_a_target_that_does_not_answer_as_down_and_sums_the_others() -> None:
    registry = CollectorRegistry()
    Counter("t_ops_scraped_total", "test", ["kind"], registry=registry).labels("a").inc(2)
    Gauge("t_ops_version", "test", registry=registry).set(3)
    Histogram("t_ops_seconds", "test", buckets=(0.1, 1.0), registry=registry).observe(0.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        up = f"http://127.0.0.1:{port}/metrics"
        down = f"http://127.0.0.1:{free_port()}/metrics"
        body = asyncio.run(collect([up, up, down]))
    finally:
        server.shutdown()
        thread.join(5)
    assert [(t["url"], t["up"]) for t in body["targets"]] == [
        ("self", True), (up, True), (up, True), (down, False)]
    assert body["targets"][3]["error"]
    assert math.isclose(body["scraped_at"], time.time(), abs_tol=60)
    values = {(s["name"], tuple(sorted(s["labels"].items()))): s["value"]
              for s in body["samples"]}
    # the same target twice: counters and buckets add up, the gauge does not
    assert values[("t_ops_scraped_total", (("kind", "a"),))] == 4.0
    assert values[("t_ops_seconds_bucket", (("le", "1.0"),))] == 2.0
    assert values[("t_ops_seconds_count", ())] == 2.0
    assert values[("t_ops_version", ())] == 3.0
    # and this process's own registry is in: the API's metrics
    assert any(name.startswith("python_") for name, _ in values)


def test_the_fast_reader_gives_prometheus_clients_own_samples_on_a_real_registry() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    hist = Histogram("t_fast_seconds", "test", ["route", "status"], buckets=(0.001, 0.1, 1.0),
                     registry=registry)
    for route in ("/v1/users/{user_id}/recommendations", 'odd "quoted" \\ route\nline'):
        for status in ("200", "503"):
            hist.labels(route, status).observe(0.05)
    Counter("t_fast_events_total", "test", ["type"], registry=registry).labels("x").inc(3)
    Gauge("t_fast_lag", "test", ["partition"], registry=registry).labels("0").set(math.inf)
    Gauge("t_fast_nan", "test", registry=registry).set(math.nan)
    text = generate_latest(registry).decode()
    expected = [(f.type, s.name, dict(s.labels), float(s.value))
                for f in text_string_to_metric_families(text) for s in f.samples
                if not s.name.endswith("_created") and not math.isnan(s.value)]
    assert parse_samples(text) == expected
    assert any(lab.get("route", "").startswith('odd "quoted" \\') for _, _, lab, _ in expected)
