"""Prometheus metrics of a stream worker (``recsys_stream_*``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("recsys_stream_events_total", "Events consumed, by type and outcome",
                 ["type", "outcome"])
DEAD_LETTERS = Counter("recsys_stream_dead_letters_total", "Events dead-lettered, by reason",
                       ["type", "reason"])
BATCH_SECONDS = Histogram(
    "recsys_stream_batch_seconds", "Time to process one batch", ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
BATCH_EVENTS = Histogram("recsys_stream_batch_events", "Events per batch", ["type"],
                         buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000))
VECTORS = Counter("recsys_stream_vector_updates_total", "User vectors recomputed")
LAG = Gauge("recsys_stream_consumer_lag", "Messages not yet processed, per partition",
            ["topic", "partition"])
MODEL_VERSION = Gauge("recsys_stream_model_version", "Model version the worker folds in with")
REDIS_ERRORS = Counter("recsys_stream_redis_errors_total",
                       "Batches retried because Redis failed")
BATCH_FAILURES = Counter("recsys_stream_batch_failures_total", "Tries of a batch step that "
                         "failed and are retried (process, dead_letters, applied_offsets)",
                         ["type", "step"])
OFFSET_HOLES = Counter("recsys_stream_offset_holes_total", "Batches that skipped past an "
                       "offset not applied yet (the partition is read again from there)",
                       ["topic"])
REFOLDED = Counter("recsys_stream_refolded_vectors_total",
                   "Vectors of active users recomputed after a new model version")
SERVED_EVENTS = Counter("recsys_stream_served_events_total", "Applied events of users the API "
                        "served a top-10 to in the last hour (live HR@10 denominator)",
                        ["type"])
SERVED_HITS = Counter("recsys_stream_served_hits_total", "... of which the movie was in that "
                      "top-10 (live HR@10 numerator)", ["type"])
