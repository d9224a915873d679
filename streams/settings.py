"""Settings of a stream worker (environment prefix ``RECSYS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from adapters.redis_store import DEDUPE_WINDOW
from adapters.settings import CommonSettings


class StreamSettings(CommonSettings):
    stream_app_id: str = Field("recsys-stream", description="Consumer group of the workers")
    stream_partitions: int = Field(8, ge=1, le=1024, description="Partitions per input topic")
    stream_batch_size: int = Field(1000, ge=1, le=100_000, description="Events per batch")
    stream_batch_seconds: float = Field(0.05, gt=0, le=10,
                                        description="Longest wait to fill a batch")
    stream_fetch_max_wait_ms: int = Field(25, ge=1, le=5000, description="Longest time a "
                                          "fetch waits on the broker for new data, ms")
    stream_metrics_port: int = Field(9101, ge=0, le=65535,
                                     description="Prometheus port of a worker (0: off)")
    stream_metrics_host: str = Field("127.0.0.1", min_length=1, description="Address "
                                     "the worker's metrics and health port binds to")
    stream_session_timeout: float = Field(10.0, ge=2, le=300,
                                          description="Consumer-group session timeout, s")
    stream_model_poll_seconds: float = Field(5.0, gt=0, description="How often to look for "
                                             "a newly published model version")
    stream_data_dir: Path = Field(Path("runs/stream"), description="Worker scratch directory")
    stream_archive_seconds: float = Field(10.0, gt=0, description="How often the event log "
                                          "is moved from Redis to Parquet")
    stream_refold_window_hours: float = Field(
        24.0, ge=0, description="After a new model version, refold at once the vectors of "
        "users active in the last N hours (0: only lazily)")
    stream_offload_processing: bool = Field(
        True, description="Process batches in a helper process, so Faust keeps delivering "
        "events meanwhile (a worker then uses two cores)")
    stream_dedupe_window: int = Field(
        DEDUPE_WINDOW, ge=1, le=10_000, description="Event ids remembered per user (the "
        "newest): a resent duplicate is dropped while among the user's last N events")
    stream_shutdown_wait_seconds: float = Field(
        30.0, ge=0, le=600, description="On shutdown, how long the batch being applied "
        "may take to finish before the worker gives it up (it is then delivered again)")
    stream_health_stall_seconds: float = Field(
        60.0, gt=0, description="Unhealthy when events wait but nothing was applied for "
        "this long (GET /healthz on the metrics port)")
    log_level: str = Field("info", description="Log level of every role")
