"""How long ``recsys state rebuild`` takes for N synthetic events (default 1M).

A synthetic MovieLens-shaped dataset (:mod:`benchmarks.synthetic`) is written as a GroupLens
CSV directory; its oldest ``--base-fraction`` is the base dataset (as the trainer reads it
with ``RECSYS_TRAIN_BASE_FRACTION``), its newest rest the Parquet event log (in the
archiver's layout and schema, in stream-entry order). A model is trained on the base and
published, so the rebuild folds every user's vector in. Then, against a fresh Redis, the
rebuild runs once (the figure), and once more (idempotent: nothing applied).

    .venv/bin/python -m benchmarks.rebuild --events 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adapters.eventlog import SCHEMA
from adapters.redis_store import UserStateStore
from benchmarks.synthetic import generate, to_dataset
from devstack import RedisServer
from training.evaluation.splits import temporal_split
from training.rebuild import RebuildSettings, rebuild_locked
from training.registry import ModelRegistry
from training.train import run_training

LOG_FILE_ROWS = 100_000


def write_inputs(n_events: int, fraction: float, root: Path, seed: int = 0
                 ) -> tuple[Path, Path, int, int]:
    """The dataset directory and the event-log directory; (base rows, log rows)."""
    ds = to_dataset(generate(n_events, seed=seed), name="synthetic")
    data = root / "synthetic"
    data.mkdir(parents=True)
    inter = ds.interactions
    pd.DataFrame({"userId": inter["user_id"], "movieId": inter["movie_id"],
                  "rating": inter["rating"].astype(float), "timestamp": inter["timestamp"]}
                 ).to_csv(data / "ratings.csv", index=False, float_format="%g")
    pd.DataFrame({"movieId": ds.movies["movie_id"], "title": ds.movies["title"],
                  "genres": "Drama"}).to_csv(data / "movies.csv", index=False)
    base, rest = temporal_split(inter, fraction)
    logdir = root / "eventlog"
    folder = logdir / "date=2019-11-01" / "hour=00"
    folder.mkdir(parents=True)
    n = len(rest)
    stream_ms = 1_700_000_000_000 + np.arange(n) // 100  # 100 entries per millisecond
    for start in range(0, n, LOG_FILE_ROWS):
        part = rest.iloc[start:start + LOG_FILE_ROWS]
        k = np.arange(start, start + len(part))
        table = pa.table({
            "event_id": [f"syn-{i}" for i in k.tolist()],
            "type": ["rating"] * len(part),
            "user_id": part["user_id"].astype(str).tolist(),
            "movie_id": part["movie_id"].astype(str).tolist(),
            "rating": part["rating"].astype(np.float32).to_numpy(),
            "watched_seconds": pa.nulls(len(part), pa.float64()),
            "duration_seconds": pa.nulls(len(part), pa.float64()),
            "completion": pa.nulls(len(part), pa.float64()),
            "occurred_at": pd.to_datetime(part["timestamp"].to_numpy(), unit="s", utc=True),
            "stream_id": [f"{ms}-{i % 100}" for ms, i in zip(stream_ms[k].tolist(),
                                                             k.tolist(), strict=True)],
        }, schema=SCHEMA)
        pq.write_table(table, folder / f"{stream_ms[k[0]]}-0_{stream_ms[k[-1]]}-0.parquet")
    return data, logdir, len(base), n


def run(n_events: int, fraction: float, cap: int, with_model: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rebuild-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        data, logdir, n_base, n_log = write_inputs(n_events, fraction, root)
        models = root / "models"
        if with_model:
            from recsys_core.loaders import load_dataset

            ds = load_dataset(str(data))
            base, _ = temporal_split(ds.interactions, fraction)
            run_training(type(ds)(ds.name, base, ds.movies, ds.attributes, ds.users,
                                  ds.links), ModelRegistry(models), fit_weights=False)
        prepared = time.perf_counter() - t
        with RedisServer() as server:
            settings = RebuildSettings(redis_url=server.url, dataset=str(data),
                                       train_base_fraction=fraction, event_log_dir=logdir,
                                       model_dir=models, user_history_cap=cap)
            store = UserStateStore.from_url(server.url, keys=settings.keys, cap=cap)
            ends: dict[str, float] = {}  # phase -> when its last batch was done

            def progress(phase: str, done: int, total: int) -> None:
                ends[phase] = time.perf_counter()

            started = time.perf_counter()
            first = rebuild_locked(store, settings, progress)
            assert first is not None
            memory = int(store.r.info("memory")["used_memory"])
            second = rebuild_locked(store, settings)
            assert second is not None
            store.r.close()
        return {
            "events": first.events, "base_rows": n_base, "log_events": n_log,
            "users": first.users, "vectors": first.vectors, "cap": cap,
            "seconds": round(first.seconds, 1),
            "events_per_second": round(first.events / first.seconds),
            # each phase from the end of the one before (base: with reading the inputs)
            "phase_seconds": {k: round(v - prev, 1) for (k, v), prev in zip(
                ends.items(), [started, *ends.values()], strict=False)},
            "applied": first.applied,
            "second_run": {"applied": second.applied, "seconds": round(second.seconds, 1)},
            "redis_used_memory_mb": round(memory / 2**20, 1),
            "preparation_seconds": round(prepared, 1),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--base-fraction", type=float, default=0.5)
    p.add_argument("--cap", type=int, default=500)
    p.add_argument("--no-model", action="store_true", help="no vectors (no model published)")
    args = p.parse_args(argv)
    result = run(args.events, args.base_fraction, args.cap, not args.no_model)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
