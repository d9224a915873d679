"""Shared pieces of the benchmarks: a dev stack, a published model, worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack import DevStack, free_port
from recsys_core.dataset import Dataset
from recsys_core.loaders import load_dataset
from training.registry import ModelRegistry
from training.train import run_training

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RECSYS_DATA_DIR", ROOT.parent / "shared" / "data"))


def _oldest(ds: Dataset, fraction: float) -> Dataset:
    inter = ds.interactions.sort_values("timestamp", kind="stable")
    return type(ds)(ds.name, inter.iloc[: int(round(fraction * len(inter)))], ds.movies,
                    ds.attributes, ds.users, ds.links)


def publish_model(model_dir: Path, dataset: str = "ml-100k", fraction: float | None = None,
                  as_trainer: bool = False) -> int:
    """Train on the dataset (or its oldest ``fraction`` of events) and publish it.

    ``as_trainer``: the model the trainer would serve: blend weights fitted, and the
    reranker's trees fitted on the cases of the events after a first version (trained on
    the oldest seven eighths of those events); otherwise the default weights and no trees.
    """
    ds = load_dataset(dataset, DATA_DIR)
    if fraction is not None:
        ds = _oldest(ds, fraction)
    registry = ModelRegistry(model_dir)
    if not as_trainer:
        return run_training(ds, registry, fit_weights=False).models.bundle.version
    run_training(_oldest(ds, 7 / 8), registry)
    run = run_training(ds, registry, rerank_every=1, force=True)
    return run.models.bundle.version


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Seconds until ``predicate()`` held; raises TimeoutError after ``timeout``."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout:.0f}s")


@contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    full = dict(os.environ, **env, RECSYS_STREAM_METRICS_PORT=str(port))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams"], env=full, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def rating_messages(dataset: str, start: int = 0, stop: int | None = None
                    ) -> list[tuple[bytes, bytes]]:
    """(key, value) of a dataset's ratings in time order, as the wire format has them."""
    ds = load_dataset(dataset, DATA_DIR)
    inter = ds.interactions.sort_values("timestamp", kind="stable").iloc[start:stop]
    out = []
    for row in inter.itertuples(index=False):
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(row.timestamp)))
        value = {"event_id": f"{ds.name}:{row.user_id}:{row.movie_id}:{int(row.timestamp)}",
                 "user_id": row.user_id, "movie_id": row.movie_id,
                 "rating": float(row.rating), "occurred_at": at}
        out.append((str(row.user_id).encode(), json.dumps(value).encode()))
    return out


def stack_env(stack: DevStack, model_dir: Path, run_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **stack.env(),
        "RECSYS_MODEL_DIR": str(model_dir),
        "RECSYS_STREAM_DATA_DIR": str(run_dir / "stream"),
        "RECSYS_STREAM_SESSION_TIMEOUT": "6",
        "RECSYS_EVENT_LOG_DIR": str(run_dir / "eventlog"),
        # counts below read the Redis event-log stream, which archiving would empty
        "RECSYS_STREAM_ARCHIVE_SECONDS": "3600",
        **extra,
    }
