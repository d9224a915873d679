"""The trainer role: training input (base dataset + event log), one locked run, the loop.

Only one trainer publishes at a time: every run holds an exclusive ``flock`` on
``<model_dir>/.trainer.lock`` from choosing its version number until ``CURRENT`` flips.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from prometheus_client import Counter, Gauge

from adapters.eventlog import read_event_log
from recsys_core.dataset import INTERACTION_COLUMNS, Dataset
from recsys_core.errors import EmptyTrainingData, RecsysError
from recsys_core.loaders import load_dataset
from training.evaluation.splits import temporal_split
from training.pipeline import TrainParams
from training.registry import ModelRegistry
from training.settings import TrainerSettings
from training.train import TrainingRun, run_training

log = logging.getLogger(__name__)
#: a failed run is retried after this long rather than a whole period later
FAILED_RETRY_SECONDS = 60.0

LOCK_FILE = ".trainer.lock"
DAY = 86_400

PHASE_SECONDS = Gauge("recsys_trainer_phase_seconds", "Seconds of the last run, by phase",
                      ["phase"])
DATA_EVENTS = Gauge("recsys_trainer_data_events", "Interactions in the last training window")
PUBLISHED_VERSION = Gauge("recsys_trainer_published_version", "Last version made current")
RUNS = Counter("recsys_trainer_runs_total", "Trainer runs, by outcome", ["outcome"])


class TrainerBusy(RecsysError):
    """Another trainer holds the lock of this model directory."""


def merge_interactions(base: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Base rows then event-log rows, de-duplicated: by ``event_id`` where there is one, else
    by (user, movie, timestamp, rating-or-watch), the first kept; sorted by time (stable)."""
    cols = [*INTERACTION_COLUMNS, "completion", "event_id"]
    frames = [f.reindex(columns=cols) for f in (base, events) if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    df = pd.concat(frames, ignore_index=True)
    df["user_id"] = df["user_id"].astype(str)
    df["movie_id"] = df["movie_id"].astype(str)
    df["timestamp"] = df["timestamp"].astype("int64")
    df["rating"] = df["rating"].astype("float32")
    df["completion"] = df["completion"].astype("float64")
    has_id = df["event_id"].notna()
    dup_id = has_id & df["event_id"].duplicated(keep="first")
    df = df[~dup_id]
    kind = df["rating"].isna()
    dup_key = pd.DataFrame({"u": df["user_id"], "m": df["movie_id"], "t": df["timestamp"],
                            "w": kind}).duplicated(keep="first")
    df = df[~dup_key.to_numpy()]
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True)


def apply_window(interactions: pd.DataFrame, days: float | None) -> pd.DataFrame:
    """The rows of the last ``days`` before the newest event (all rows when ``days`` is None)."""
    if len(interactions) == 0:
        raise EmptyTrainingData("no interactions: the dataset and the event log are both empty")
    if days is None:
        return interactions
    if not days > 0:
        raise EmptyTrainingData(f"training window must be a positive number of days, got {days}")
    newest = int(interactions["timestamp"].max())
    since = newest - days * DAY
    kept = interactions[interactions["timestamp"] >= since].reset_index(drop=True)
    if len(kept) == 0:  # cannot happen with days > 0, kept as a guard for odd timestamps
        raise EmptyTrainingData(f"no interactions in the last {days} days before {newest}")
    return kept


def base_interactions(interactions: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The oldest ``fraction`` of the base dataset's rows by time (all rows at 1.0): the same
    cut as ``recsys replay --fraction``, so a demo never trains on the part it replays."""
    if fraction >= 1.0:
        return interactions
    return temporal_split(interactions, fraction)[0]


def training_dataset(
    settings: TrainerSettings, with_event_log: bool, window_days: float | None
) -> Dataset:
    base = load_dataset(settings.dataset, settings.data_dir)
    rows = base_interactions(base.interactions, settings.train_base_fraction)
    events = read_event_log(settings.event_log_dir) if with_event_log else rows[:0]
    merged = apply_window(merge_interactions(rows, events), window_days)
    return replace(base, interactions=merged)


def count_log_events(directory: Path) -> int:
    """Rows in the event log's Parquet files, from their footers (cheap; not de-duplicated)."""
    total = 0
    for path in Path(directory).glob("date=*/hour=*/*.parquet"):
        try:
            total += pq.ParquetFile(path).metadata.num_rows
        except (OSError, ValueError):  # a file being replaced: counted on the next poll
            continue
    return total


@contextmanager
def trainer_lock(model_dir: Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """Exclusive lock of ``model_dir`` for one trainer; :class:`TrainerBusy` after waiting
    ``wait_seconds`` for another one to finish."""
    model_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(model_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TrainerBusy(f"another trainer holds {model_dir / LOCK_FILE}") from None
                if not waited:
                    log.info("another trainer holds %s; waiting up to %.0f s",
                             model_dir / LOCK_FILE, wait_seconds)
                    waited = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def trainer_params(settings: TrainerSettings) -> TrainParams:
    """The training parameters a trainer with ``settings`` uses."""
    return TrainParams(history_cap=settings.user_history_cap)


def run_with_settings(
    dataset: Dataset,
    registry: ModelRegistry,
    settings: TrainerSettings,
    *,
    fit_weights: bool = True,
    force: bool = False,
    params: TrainParams | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingRun:
    """One run of :func:`run_training` as the trainer with ``settings`` makes it (holdout,
    gate, reranker); the caller holds the lock. The offline simulation of a deployment
    (:mod:`training.evaluation.deployed`) calls this too."""
    return run_training(
        dataset, registry, params or trainer_params(settings), fit_weights=fit_weights,
        progress=progress, holdout_fraction=settings.train_holdout_fraction,
        holdout_max_events=settings.train_holdout_max_events,
        gate_tolerance=settings.train_gate_tolerance, force=force,
        rerank_every=settings.train_rerank_every,
    )


def refit_weights_due(settings: TrainerSettings, runs: int, has_model: bool) -> bool:
    """Whether the periodic trainer's next run (after ``runs`` finished ones) refits the
    blend weights: always without a model, then every ``train_refit_weights_every``-th."""
    every = settings.train_refit_weights_every
    return not has_model or (every > 0 and (runs + 1) % every == 0)


def train_once(
    settings: TrainerSettings,
    *,
    fit_weights: bool = True,
    force: bool = False,
    with_event_log: bool | None = None,
    window_days: float | None = None,
    lock_wait: float | None = None,
    params: TrainParams | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingRun:
    """Load the training input, then train, gate and publish under the lock."""
    with_log = settings.train_with_event_log if with_event_log is None else with_event_log
    days = settings.train_window_days if window_days is None else window_days
    start = time.perf_counter()
    dataset = training_dataset(settings, with_log, days)
    load_seconds = time.perf_counter() - start
    registry = ModelRegistry(settings.model_dir, keep=settings.train_keep_versions)
    wait = settings.train_lock_wait_seconds if lock_wait is None else lock_wait
    with trainer_lock(settings.model_dir, wait):
        run = run_with_settings(dataset, registry, settings, fit_weights=fit_weights,
                                force=force, params=params, progress=progress)
    run.seconds["load"] = load_seconds
    for phase, secs in run.seconds.items():
        PHASE_SECONDS.labels(phase).set(secs)
    DATA_EVENTS.set(len(dataset.interactions))
    if run.published:
        PUBLISHED_VERSION.set(run.version)
    RUNS.labels("published" if run.published else "refused").inc()
    return run


class Trainer:
    """Retrains every ``train_every_minutes`` or after ``train_after_events`` new events in
    the event log, whichever comes first, until :meth:`stop`."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.runs = 0
        self.last_run = self._last_publish_time()
        self.last_count = count_log_events(settings.event_log_dir)

    def _last_publish_time(self) -> float | None:
        registry = ModelRegistry(self.settings.model_dir)
        current = registry.current_version()
        if current is None:
            return None
        created = registry.manifest(current).get("created_at")
        try:
            return datetime.fromisoformat(str(created)).timestamp()
        except ValueError:
            return None

    def stop(self) -> None:
        self.stopping.set()

    def due(self, now: float, count: int) -> str | None:
        """Why a run is due now, or None."""
        if self.last_run is None:
            return "no model published yet"
        if now - self.last_run >= self.settings.train_every_minutes * 60:
            return f"{self.settings.train_every_minutes} minutes passed"
        if count - self.last_count >= self.settings.train_after_events:
            return f"{count - self.last_count} new events in the event log"
        return None

    def run_forever(self) -> None:
        log.info("trainer started on %s (every %s min or %d new events)",
                 self.settings.model_dir, self.settings.train_every_minutes,
                 self.settings.train_after_events)
        while not self.stopping.is_set():
            count = count_log_events(self.settings.event_log_dir)
            reason = self.due(time.time(), count)
            if reason is not None:
                self.run_once(reason, count)
            self.stopping.wait(self.settings.train_poll_seconds)
        log.info("trainer stopped after %d runs", self.runs)

    def run_once(self, reason: str, count: int) -> TrainingRun | None:
        has_model = ModelRegistry(self.settings.model_dir).current_version() is not None
        refit = refit_weights_due(self.settings, self.runs, has_model)
        log.info("training (%s; %s blend weights)", reason, "refitting" if refit else "reusing")
        self.last_run, self.last_count = time.time(), count
        try:
            run = train_once(self.settings, fit_weights=refit, lock_wait=0.0)
        except TrainerBusy as exc:
            RUNS.labels("skipped_busy").inc()
            log.warning("skipping this run: %s", exc)
            return None
        except RecsysError as exc:
            RUNS.labels("failed").inc()
            # try again in a minute (e.g. the dataset is being fetched), not a period later
            period = self.settings.train_every_minutes * 60
            self.last_run = time.time() - max(0.0, period - FAILED_RETRY_SECONDS)
            log.warning("training run failed (retrying in %.0f s): %s",
                        min(period, FAILED_RETRY_SECONDS), exc)
            return None
        self.runs += 1
        log.info("run %d done in %.1f s: version %d %s", self.runs, run.seconds["total"],
                 run.version, "published" if run.published else "refused by the gate",
                 extra={"model_version": run.version})
        return run
