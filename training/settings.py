"""Settings of the trainer role (environment prefix ``RECSYS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from adapters.settings import CommonSettings


class TrainerSettings(CommonSettings):
    dataset: str = Field("ml-100k", description="Base dataset name or directory")
    data_dir: Path | None = Field(None, description="Where datasets live")
    train_base_fraction: float = Field(
        1.0, gt=0, le=1, description="Oldest share (by time) of the base dataset's "
        "interactions used; the newer rest is left out (the demo replays it)")
    train_with_event_log: bool = Field(True, description="Add the stream's event log")
    train_window_days: float | None = Field(
        None, gt=0, description="Train on the last N days before the newest event (all: unset)")
    train_every_minutes: float = Field(60.0, gt=0, description="Retrain at least this often")
    train_after_events: int = Field(
        10_000, ge=1, description="Retrain early once this many new events are in the log")
    train_poll_seconds: float = Field(
        5.0, gt=0, description="How often the trainer looks at the clock and the event log")
    train_refit_weights_every: int = Field(
        10, ge=0, description="Refit blend weights every K-th run (0: never; 1: every run)")
    train_gate_tolerance: float = Field(
        0.02, ge=0, le=1, description="Largest allowed drop of holdout HR@10 (absolute)")
    train_holdout_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Newest share of events held out for the gate")
    train_holdout_max_events: int = Field(1000, ge=10, description="Holdout events scored")
    train_rerank_every: int = Field(
        5000, ge=0, description="Refit the reranker after this many new events (0: no reranker)")
    train_keep_versions: int = Field(5, ge=1, description="Model versions kept on disk")
    train_lock_wait_seconds: float = Field(
        600.0, ge=0, description="How long a one-off train waits for another trainer")
    trainer_metrics_port: int = Field(0, ge=0, le=65535,
                                      description="Prometheus port of the trainer (0: off)")
    trainer_metrics_host: str = Field("127.0.0.1", min_length=1, description="Address "
                                      "the trainer's metrics port binds to")
    log_level: str = Field("info", description="Log level of every role")
