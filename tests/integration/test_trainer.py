"""The trainer: input merging and the window, the gate, the lock; then on ml-100k plus an
event log: holdout metrics, a refused bad model, ``--force``, two trainer processes and the
periodic loop under SIGTERM.

One file for both levels: a second ``test_trainer.py`` under ``tests/unit`` would clash
with this one (the test directories are not packages)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.eventlog import SCHEMA, read_event_log
from recsys_core.dataset import Dataset
from recsys_core.errors import EmptyTrainingData
from recsys_core.loaders import load_dataset
from training.gate import check_gate
from training.pipeline import TrainParams
from training.registry import ModelRegistry
from training.settings import TrainerSettings
from training.trainer import (
    FAILED_RETRY_SECONDS,
    Trainer,
    TrainerBusy,
    apply_window,
    base_interactions,
    count_log_events,
    merge_interactions,
    train_once,
    trainer_lock,
    training_dataset,
)

#: clearly worse than the defaults: one ALS factor, one neighbour, no popularity or sessions
BAD = TrainParams(als_factors=1, als_iterations=1, neighbors_top_n=1, content_dim=2,
                  rating_factors=1, rating_iterations=1, popularity_half_life_days=1e-6,
                  session_gap_seconds=0.0, confidence_alpha=0.0)
ROOT = Path(__file__).resolve().parents[2]
N_LOG_EVENTS = 60


def write_event_log(directory: Path, rows: list[dict[str, object]], name: str = "1-0"
                    ) -> None:
    """Archiver-shaped Parquet: one file per hour of the rows' ``timestamp``."""
    by_hour: dict[datetime, list[dict[str, object]]] = {}
    for n, row in enumerate(rows):
        at = datetime.fromtimestamp(int(row["timestamp"]), UTC)  # type: ignore[call-overload]
        full = {"type": "watch" if "completion" in row else "rating", "stream_id": f"{name}-{n}",
                **row, "occurred_at": at}
        full.pop("timestamp")
        by_hour.setdefault(at.replace(minute=0, second=0), []).append(full)
    for hour, group in by_hour.items():
        folder = directory / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(group, schema=SCHEMA), folder / f"{name}.parquet")


def _base() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ["1", "1", "2"], "movie_id": ["10", "11", "10"],
        "rating": np.array([4, 3, 5], np.float32),
        "timestamp": np.array([1_000, 2_000, 3_000], np.int64),
    })


def test_merge_dedupes_by_event_id_then_by_user_movie_time(tmp_path: Path) -> None:
    write_event_log(tmp_path, [
        {"event_id": "a", "user_id": "1", "movie_id": "12", "rating": 5.0, "timestamp": 5_000},
        # the same base rating replayed through the stream: a duplicate of a base row
        {"event_id": "b", "user_id": "1", "movie_id": "10", "rating": 4.0, "timestamp": 1_000},
        # a watch at the same second as a rating is a different interaction
        {"event_id": "c", "user_id": "2", "movie_id": "10", "completion": 0.9,
         "timestamp": 3_000},
    ], name="1-0")
    # a batch re-archived after a crash: the same event id again in another file
    write_event_log(tmp_path, [
        {"event_id": "a", "user_id": "1", "movie_id": "12", "rating": 5.0, "timestamp": 5_000},
    ], name="2-0")
    events = read_event_log(tmp_path)
    doubled = pd.concat([events, events.assign(event_id=events["event_id"])])
    merged = merge_interactions(_base(), doubled)
    assert len(merged) == 5
    assert merged["timestamp"].is_monotonic_increasing
    watch = merged[merged["completion"].notna()]
    assert watch[["user_id", "movie_id", "completion"]].values.tolist() == [["2", "10", 0.9]]
    assert np.isnan(watch["rating"].iloc[0])
    assert merged["event_id"].dropna().tolist() == ["c", "a"]


def test_merge_of_an_empty_log_keeps_the_base_rows() -> None:
    merged = merge_interactions(_base(), read_event_log(Path("/nonexistent")))
    assert len(merged) == 3 and merged["event_id"].isna().all()


def test_window_keeps_the_days_before_the_newest_event() -> None:
    merged = merge_interactions(_base(), pd.DataFrame())
    kept = apply_window(merged, 1_500 / 86_400)
    assert kept["timestamp"].tolist() == [2_000, 3_000]
    assert len(apply_window(merged, None)) == 3


@pytest.mark.parametrize("days", [0.0, -1.0])
def test_window_of_no_days_is_refused(days: float) -> None:
    with pytest.raises(EmptyTrainingData, match="positive"):
        apply_window(merge_interactions(_base(), pd.DataFrame()), days)


def test_window_on_no_data_is_refused() -> None:
    with pytest.raises(EmptyTrainingData, match="empty"):
        apply_window(merge_interactions(pd.DataFrame(), pd.DataFrame()), 7)


def test_base_fraction_keeps_the_oldest_share_that_replay_skips(
        tmp_path: Path, data_dir: Path) -> None:
    from adapters.replay import select_interactions

    settings = TrainerSettings(data_dir=data_dir, event_log_dir=tmp_path / "log",
                               train_base_fraction=0.8)
    ds = training_dataset(settings, with_event_log=True, window_days=None)
    replayed = select_interactions(load_dataset("ml-100k", data_dir).interactions,
                                   fraction=0.8)
    assert len(ds.interactions) == 80_000 and len(replayed) == 20_000
    assert ds.interactions["timestamp"].max() <= replayed["timestamp"].min()
    assert len(base_interactions(_base(), 1.0)) == 3
    assert base_interactions(_base(), 0.5)["timestamp"].tolist() == [1_000, 2_000]


def test_gate_passes_within_tolerance_and_refuses_a_drop() -> None:
    ok = check_gate({"holdout_hr@10": 0.19}, {3: 0.20}, 3, 0.02)
    assert ok.passed and ok.current_version == 3 and ok.reference_version == 3
    bad = check_gate({"holdout_hr@10": 0.10}, {3: 0.20}, 3, 0.02)
    assert not bad.passed and "worse than current version 3" in bad.reason
    assert "on the same holdout events" in bad.reason
    assert bad.to_dict()["candidate_hr@10"] == 0.10


def test_gate_compares_with_the_best_accepted_version_not_only_the_current() -> None:
    """A current version that slipped within the tolerance does not lower the bar: an
    older accepted version's recipe, better on the same events, is the reference."""
    refs = {5: 0.185, 4: 0.20}
    slipped = check_gate({"holdout_hr@10": 0.17}, refs, 5, 0.02)
    assert not slipped.passed and "worse than version 4's 0.2000" in slipped.reason
    assert slipped.reference_version == 4 and slipped.current_hr == 0.20
    assert check_gate({"holdout_hr@10": 0.181}, refs, 5, 0.02).passed


def test_gate_refuses_a_candidate_below_popularity() -> None:
    metrics = {"holdout_hr@10": 0.05, "holdout_popularity_hr@10": 0.08}
    low = check_gate(metrics, {1: 0.06}, 1, 0.02)
    assert not low.passed and "popularity" in low.reason
    assert low.to_dict()["popularity_hr@10"] == 0.08


def test_gate_passes_without_a_current_version_or_its_recipe() -> None:
    assert check_gate({"holdout_hr@10": 0.0}, {}, None, 0.02).passed
    assert check_gate({"holdout_hr@10": 0.0}, {}, 1, 0.02).passed
    assert not check_gate({}, {1: 0.2}, 1, 0.02).passed


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with trainer_lock(tmp_path), pytest.raises(TrainerBusy, match="another trainer"):
        with trainer_lock(tmp_path, wait_seconds=0.3):
            pass
    with trainer_lock(tmp_path):
        pass


def test_trainer_is_due_after_enough_new_events(tmp_path: Path) -> None:
    settings = TrainerSettings(model_dir=tmp_path / "models", event_log_dir=tmp_path / "log",
                               train_every_minutes=60, train_after_events=3)
    loop = Trainer(settings)
    assert loop.due(0.0, 0) == "no model published yet"
    loop.last_run, loop.last_count = 1_000.0, 0
    assert loop.due(1_010.0, 2) is None
    assert loop.due(1_010.0, 3) == "3 new events in the event log"
    assert loop.due(1_000.0 + 3600, 0) == "60.0 minutes passed"
    write_event_log(settings.event_log_dir, [
        {"event_id": str(n), "user_id": "1", "movie_id": "1", "rating": 3.0, "timestamp": n}
        for n in range(4)])
    assert count_log_events(settings.event_log_dir) == 4


def test_a_failed_run_is_retried_after_a_minute_not_a_period(tmp_path: Path) -> None:
    settings = TrainerSettings(model_dir=tmp_path / "models", event_log_dir=tmp_path / "log",
                               dataset=str(tmp_path / "no-such-dataset"),
                               train_every_minutes=60)
    loop = Trainer(settings)
    started = time.time()
    assert loop.run_once("test", 0) is None
    assert loop.due(started + 30, 0) is None
    assert loop.due(started + FAILED_RETRY_SECONDS + 5, 0) is not None


def _log_rows(ml100k: Dataset, start: int, n: int, prefix: str) -> list[dict[str, object]]:
    inter = ml100k.interactions
    users = inter["user_id"].unique()
    movies = inter["movie_id"].unique()
    rows: list[dict[str, object]] = []
    for k in range(n):
        row: dict[str, object] = {"event_id": f"{prefix}-{k}", "user_id": str(users[k]),
                                  "movie_id": str(movies[k]), "timestamp": start + k}
        row.update({"completion": 0.8} if k % 3 == 0 else {"rating": 4.0})
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path,
         ml100k: Dataset) -> dict[str, Any]:
    """A good version, then a bad one (refused), then the bad one with ``force``, then the
    bad one again (the good version, accepted before the forced one, stays the bar)."""
    root = tmp_path_factory.mktemp("trainer")
    newest = int(ml100k.interactions["timestamp"].max())
    write_event_log(root / "log", _log_rows(ml100k, newest + 60, N_LOG_EVENTS, "e"))
    settings = TrainerSettings(data_dir=data_dir, model_dir=root / "models",
                               event_log_dir=root / "log", train_holdout_max_events=300)
    reg = ModelRegistry(settings.model_dir)
    good = train_once(settings, fit_weights=False)
    bad = train_once(settings, fit_weights=False, params=BAD)
    after_bad = reg.current_version()
    forced = train_once(settings, fit_weights=False, params=BAD, force=True)
    again = train_once(settings, fit_weights=False, params=BAD)
    return {"settings": settings, "registry": reg, "good": good, "bad": bad,
            "after_bad": after_bad, "forced": forced, "again": again}


def test_good_version_is_published_with_holdout_metrics_and_the_event_log(
        runs: dict[str, Any]) -> None:
    manifest = runs["registry"].manifest(1)
    metrics = manifest["metrics"]
    assert 0.1 < metrics["holdout_hr@10"] <= 1.0
    assert 0.0 < metrics["holdout_ndcg@10"] <= metrics["holdout_hr@10"]
    assert metrics["holdout_events"] == 10_006 and 0 < metrics["holdout_scored"] <= 300
    assert metrics["holdout_train_events"] == 90_054
    assert manifest["data_window"]["interactions"] == 100_000 + N_LOG_EVENTS
    assert manifest["gate"]["passed"] and manifest["gate"]["reason"] == "no current version"


def test_bad_version_is_refused_kept_on_disk_and_current_stays(runs: dict[str, Any]) -> None:
    assert runs["good"].published and not runs["bad"].published
    assert runs["after_bad"] == 1
    manifest = runs["registry"].manifest(2)
    assert manifest["gate"]["passed"] is False and not manifest["gate"]["forced"]
    assert "worse than current version 1" in manifest["gate"]["reason"]
    good_hr = runs["registry"].manifest(1)["metrics"]["holdout_hr@10"]
    assert manifest["metrics"]["holdout_hr@10"] < good_hr - 0.02
    # version 1's recipe was trained again on the same older part and scored on the same
    # holdout events as the candidate: the same figure version 1 measured on this data
    assert manifest["gate"]["references_hr@10"] == {"1": good_hr}
    assert manifest["gate"]["current_hr@10"] == good_hr
    assert runs["registry"].load(2).version == 2  # a whole bundle, loadable for inspection


def test_force_publishes_a_refused_version(runs: dict[str, Any]) -> None:
    assert runs["forced"].published and runs["registry"].current_version() == 3
    gate = runs["registry"].manifest(3)["gate"]
    assert gate["passed"] is False and gate["forced"] is True


def test_a_forced_bad_version_does_not_lower_the_bar(runs: dict[str, Any]) -> None:
    """After the bad recipe was forced live, the same bad recipe is refused again: the
    references are the current version (3, the same recipe: the same figure, not trained
    again) and version 1, accepted before it; the refused version 2 is not one."""
    assert not runs["again"].published and runs["registry"].current_version() == 3
    gate = runs["registry"].manifest(4)["gate"]
    assert set(gate["references_hr@10"]) == {"1", "3"}
    assert gate["references_hr@10"]["3"] == gate["candidate_hr@10"]
    assert gate["reference_version"] == 1 and "worse than version 1's" in gate["reason"]


def test_empty_window_is_refused_and_nothing_published(tmp_path: Path, data_dir: Path) -> None:
    settings = TrainerSettings(data_dir=data_dir, model_dir=tmp_path / "models",
                               event_log_dir=tmp_path / "log")
    with pytest.raises(EmptyTrainingData, match="at least 20"):
        train_once(settings, window_days=1e-9)
    with pytest.raises(EmptyTrainingData, match="positive"):
        train_once(settings, window_days=0.0)
    assert ModelRegistry(settings.model_dir).versions() == []
    result = _recsys(["train", "--since", "0", "--no-event-log"], _env(settings))
    assert result.returncode == 1 and "positive number of days" in result.stderr
    assert not (settings.model_dir / "CURRENT").exists()


def _env(settings: TrainerSettings, **extra: str) -> dict[str, str]:
    return {**os.environ, "RECSYS_DATA_DIR": str(settings.data_dir),
            "RECSYS_MODEL_DIR": str(settings.model_dir),
            "RECSYS_EVENT_LOG_DIR": str(settings.event_log_dir),
            "RECSYS_TRAIN_HOLDOUT_MAX_EVENTS": "200", "COLUMNS": "200", **extra}


def _recsys(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recsys_cli.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=180, check=False)


def _copy_good_version(runs: dict[str, Any], target: Path) -> None:
    shutil.copytree(runs["settings"].model_dir / "v1", target / "v1")
    (target / "CURRENT").write_text("1\n")


@pytest.mark.slow  # ~25 s: two full training runs in sequence
def test_two_trainers_started_together_publish_one_after_the_other(
        runs: dict[str, Any], tmp_path: Path) -> None:
    settings = runs["settings"].model_copy(update={"model_dir": tmp_path / "models"})
    _copy_good_version(runs, settings.model_dir)
    args = [sys.executable, "-m", "recsys_cli.main", "train", "--no-fit-weights",
            "--no-event-log"]
    procs = [subprocess.Popen(args, env=_env(settings), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    reg = ModelRegistry(settings.model_dir)
    assert reg.versions() == [1, 2, 3] and reg.current_version() == 3
    published = sorted(o.split("published version ")[1].split()[0] for o, _ in outs)
    assert published == ["2", "3"]
    assert reg.manifest(3)["gate"]["current_version"] == 2  # the second saw the first's result
    assert not list(settings.model_dir.glob(".CURRENT.*"))


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_trainer_loop_retrains_on_new_events_and_stops_on_sigterm(
        runs: dict[str, Any], ml100k: Dataset, tmp_path: Path) -> None:
    settings = runs["settings"].model_copy(update={"model_dir": tmp_path / "models",
                                                   "event_log_dir": tmp_path / "log"})
    _copy_good_version(runs, settings.model_dir)
    log_file = tmp_path / "trainer.log"
    env = _env(settings, RECSYS_TRAIN_POLL_SECONDS="0.2", RECSYS_TRAIN_REFIT_WEIGHTS_EVERY="0")
    with open(log_file, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys_cli.main", "trainer", "--every-minutes", "600",
             "--after-events", "30"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait_for(lambda: "trainer started" in log_file.read_text(), "the trainer to start")
        newest = int(ml100k.interactions["timestamp"].max())
        write_event_log(settings.event_log_dir, _log_rows(ml100k, newest + 60, 40, "loop"))
        _wait_for(lambda: "run 1 done" in log_file.read_text(), "one training run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log_file.read_text()
    assert "40 new events in the event log" in text and "trainer stopped after 1 runs" in text
    reg = ModelRegistry(settings.model_dir)
    assert reg.versions() == [1, 2]
    manifest = json.loads((settings.model_dir / "v2" / "manifest.json").read_text())
    assert manifest["data_window"]["interactions"] == 100_040
    assert manifest["blend_weights"] == reg.manifest(1)["blend_weights"]  # reused, not refit
