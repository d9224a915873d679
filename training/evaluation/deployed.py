"""Protocol C as deployed, offline: what ``recsys up`` runs, simulated event by event.

- Version 1 is trained as the stack trains it (``recsys train --train-fraction F
  --no-event-log --force``): the oldest ``F`` of the dataset, blend weights fitted, no
  reranker (no cases logged yet).
- The newest ``1 - F`` are replayed in time order. Before each event the serving version
  ranks the user's top 10 as the API does (:class:`training.evaluation.live.LiveReplay`:
  the default surface's blend over the newest ``history_cap`` movies, every movie seen
  excluded, the blend's top 50 reordered by the version's trees when it carries them) and
  a hit is scored; then the event is applied.
- After every ``train_after_events`` events the periodic trainer runs, with the trainer's
  own function and settings (:func:`training.trainer.run_with_settings`: holdout, quality
  gate, reranker stage with its held-out check, blend weights refitted every
  ``train_refit_weights_every``-th run) on the base rows plus the events so far as the
  event log holds them. A version the gate passes serves from the next event on.

Nothing is handed in from outside: no versions, no warm-up. The live benchmark
(``benchmarks/serving.py --parts protocol-c --deployed``) runs the same deployment through
the real stack and pauses the replay at the same events until the trainer has run, so the
two can be compared event for event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from recsys_core.dataset import Dataset
from recsys_core.loaders import load_dataset
from recsys_core.scoring import BlendWeights
from training.evaluation.live import LiveReplay
from training.evaluation.splits import temporal_split
from training.registry import ModelRegistry
from training.rerank import CaseLog
from training.settings import TrainerSettings
from training.train import TrainingRun
from training.trainer import (
    base_interactions,
    merge_interactions,
    refit_weights_due,
    run_with_settings,
    trainer_params,
)

Progress = Callable[[str], None]
K = 10


def event_id(dataset: str, user_id: object, movie_id: object, timestamp: object) -> str:
    """The event id ``recsys replay`` (and the live benchmark) give a dataset's rating."""
    return f"{dataset}:{user_id}:{movie_id}:{int(timestamp)}"  # type: ignore[call-overload]


def as_event_log(name: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Replayed rows as :func:`adapters.eventlog.read_event_log` returns them once the stream
    applied and archived them."""
    return pd.DataFrame({
        "user_id": rows["user_id"].astype(str).to_numpy(),
        "movie_id": rows["movie_id"].astype(str).to_numpy(),
        "rating": rows["rating"].to_numpy(np.float32),
        "timestamp": rows["timestamp"].to_numpy(np.int64),
        "completion": np.full(len(rows), np.nan),
        "event_id": [event_id(name, u, m, t) for u, m, t in zip(
            rows["user_id"], rows["movie_id"], rows["timestamp"], strict=True)],
    })


def _version_row(n: int, run: TrainingRun) -> dict[str, Any]:
    manifest = run.models.bundle.manifest
    gate = manifest.get("gate", {})
    rr = manifest.get("reranker", {})
    return {"after_events": n, "version": run.version, "published": run.published,
            "gate": gate.get("reason"), "reranker": rr.get("decision"),
            "reranker_reason": rr.get("reason"),
            "held_out_blend_hr@10": rr.get("blend_hr@10"),
            "held_out_rerank_hr@10": rr.get("rerank_hr@10"),
            "seconds": round(run.seconds.get("total", 0.0), 1)}


def simulate_deployment(
    settings: TrainerSettings,
    model_dir: Path,
    fraction: float = 0.8,
    limit: int | None = None,
    progress: Progress | None = None,
    on_version: Callable[[int, int, bool], None] | None = None,
    dataset: Dataset | None = None,
) -> dict[str, Any]:
    """Replay the newest ``1 - fraction`` of ``settings.dataset`` against the deployment
    (versions published under ``model_dir``); ``limit``: the first N replay events only.
    ``on_version(event, version, published)`` is called after each trainer run with the
    replay event from which its outcome holds. Returns HR@10 / MRR@10 over the replay,
    per window of ``train_after_events`` events, every run's outcome and each replay
    event's rank (``ranks``; -1 for a movie the model does not know). ``dataset``: the
    dataset itself instead of loading ``settings.dataset``."""
    settings = settings.model_copy(update={"model_dir": model_dir,
                                           "train_base_fraction": fraction})
    ds = dataset if dataset is not None else load_dataset(settings.dataset, settings.data_dir)
    registry = ModelRegistry(model_dir, keep=settings.train_keep_versions)
    base_rows = base_interactions(ds.interactions, fraction)
    base = replace(ds, interactions=merge_interactions(base_rows, base_rows.iloc[:0]))
    replay = temporal_split(ds.interactions, fraction)[1]
    if limit:
        replay = replay.iloc[:limit]
    log = as_event_log(ds.name, replay)
    params = trainer_params(settings)
    started = time.perf_counter()
    if progress:
        progress(f"deployed: version 1 on {len(base.interactions):,} events")
    with threadpool_limits(1, "blas"):
        first = run_with_settings(base, registry, settings, fit_weights=True, force=True,
                                  params=params)
    bundle = registry.load()
    live = LiveReplay(ds, params, BlendWeights(), base.interactions, retrain_every=0,
                      rerank_every=0, cases=CaseLog(window=1, full=0), bundle=bundle)
    live.serve(bundle)
    runs: list[dict[str, Any]] = [_version_row(0, first)]
    every = settings.train_after_events
    columns = list(replay.columns)
    ranks: list[int] = []
    blend_ranks: list[int] = []
    windows: list[int] = []
    #: per replay event: the final rank (K: a miss), -1 for a movie the model does not know
    every_rank: list[int] = []
    done = 0
    for n, row in enumerate(replay.itertuples(index=False, name=None)):
        if n and n % every == 0:
            window = replace(ds, interactions=merge_interactions(base_rows, log.iloc[:n]))
            fit = refit_weights_due(settings, done, True)
            if progress:
                progress(f"deployed: trainer run {done + 1} after {n:,} events"
                         f"{' (refitting blend weights)' if fit else ''}")
            with threadpool_limits(1, "blas"):
                run = run_with_settings(window, registry, settings, fit_weights=fit,
                                        params=params)
            done += 1
            runs.append(_version_row(n, run))
            if run.published:
                live.serve(registry.load())
            if on_version is not None:
                on_version(n, run.version, run.published)
        got = live.step(row, columns)
        every_rank.append(-1 if got is None else got[1])
        if got is not None:
            blend_ranks.append(got[0])
            ranks.append(got[1])
            windows.append(n // every)
    r = np.asarray(ranks)
    b = np.asarray(blend_ranks)
    w = np.asarray(windows)
    return {
        "dataset": ds.name, "train_events": len(base.interactions),
        "replay_events": len(replay), "scored": int(r.size),
        "skipped_unknown_movie": live.skipped, "train_after_events": every,
        "rerank_every": settings.train_rerank_every,
        "hr@10": _hr(r), "mrr@10": _mrr(r),
        "blend_hr@10": _hr(b),
        "windows": [{"from_event": int(k) * every, "events": int((w == k).sum()),
                     "hr@10": _hr(r[w == k]), "blend_hr@10": _hr(b[w == k])}
                    for k in np.unique(w)],
        "runs": runs,
        "ranks": every_rank,
        "seconds": time.perf_counter() - started,
    }


def _hr(r: np.ndarray) -> float:
    return float(np.mean(r < K)) if r.size else 0.0


def _mrr(r: np.ndarray) -> float:
    return float(np.mean(np.where(r < K, 1.0 / (r + 1.0), 0.0))) if r.size else 0.0
