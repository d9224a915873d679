"""The three evaluation protocols (docs/evaluation.md): A top-N (:mod:`.topn`, through the
trainer's path), B rating, C streaming."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.model_selection import KFold

from recsys_core import metrics
from recsys_core.artifacts import ModelBundle
from recsys_core.dataset import Dataset
from recsys_core.history import UserHistory
from recsys_core.scoring import COMPONENTS, BlendWeights, blend, component_scores, top_k
from training.evaluation.live import LiveReplay
from training.evaluation.splits import temporal_split
from training.evaluation.topn import protocol_topn
from training.models.rating import fit_rating_model
from training.pipeline import TrainParams, train_models
from training.weights import apply_event, fit_weights_temporal, history_of

__all__ = ["protocol_rating", "protocol_stream", "protocol_topn"]

Progress = Callable[[str], None]
K = 10


def protocol_rating(
    dataset: Dataset,
    params: TrainParams | None = None,
    folds: int = 5,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Protocol B: k-fold cross-validation of explicit rating prediction (RMSE, MAE)."""
    params = params or TrainParams()
    inter = dataset.interactions.reset_index(drop=True)
    users = {u: i for i, u in enumerate(sorted(inter["user_id"].unique()))}
    movies = {m: i for i, m in enumerate(sorted(inter["movie_id"].unique()))}
    u = inter["user_id"].map(users).to_numpy()
    i = inter["movie_id"].map(movies).to_numpy()
    r = inter["rating"].to_numpy(np.float64)
    lo, hi = float(r.min()), float(r.max())
    results: dict[str, list[float]] = {k: [] for k in (
        "rmse", "mae", "baseline_rmse", "baseline_mae", "mean_rmse", "mean_mae", "fit_seconds")}
    for fold, (tr, te) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(inter)):
        if progress:
            progress(f"B fold {fold + 1}/{folds}")
        m = sp.csr_matrix((r[tr], (u[tr], i[tr])), shape=(len(users), len(movies)))
        start = time.perf_counter()
        model = fit_rating_model(
            m, params.rating_factors, params.rating_regularization,
            params.rating_bias_regularization, params.rating_iterations, params.seed,
        )
        results["fit_seconds"].append(time.perf_counter() - start)
        pred = np.clip(model.predict(u[te], i[te]), lo, hi)
        results["rmse"].append(metrics.rmse(r[te], pred))
        results["mae"].append(metrics.mae(r[te], pred))
        base = fit_rating_model(
            m, 1, 1e6, params.rating_bias_regularization, 2, params.seed)  # biases only
        bpred = np.clip(base.predict(u[te], i[te]), lo, hi)
        results["baseline_rmse"].append(metrics.rmse(r[te], bpred))
        results["baseline_mae"].append(metrics.mae(r[te], bpred))
        mean = np.full(te.size, r[tr].mean())
        results["mean_rmse"].append(metrics.rmse(r[te], mean))
        results["mean_mae"].append(metrics.mae(r[te], mean))
    return {
        "protocol": "B",
        "folds": folds,
        "seed": seed,
        "models": {
            "biased_mf_als": {"rmse": float(np.mean(results["rmse"])),
                              "mae": float(np.mean(results["mae"]))},
            "biases_only": {"rmse": float(np.mean(results["baseline_rmse"])),
                            "mae": float(np.mean(results["baseline_mae"]))},
            "global_mean": {"rmse": float(np.mean(results["mean_rmse"])),
                            "mae": float(np.mean(results["mean_mae"]))},
        },
        "per_fold_rmse": results["rmse"],
        "fit_seconds_mean": float(np.mean(results["fit_seconds"])),
    }


def protocol_stream(
    dataset: Dataset,
    params: TrainParams | None = None,
    fraction: float = 0.8,
    progress: Progress | None = None,
    limit: int | None = None,
    on_model: Callable[[ModelBundle], None] | None = None,
    retrain_every: int = 0,
    rerank_every: int = 5000,
    warmup: float = 0.5,
    on_live_model: Callable[[int, ModelBundle], None] | None = None,
    deployed: bool = True,
) -> dict[str, Any]:
    """Protocol C, offline: train on the oldest ``fraction``, replay the rest in time order;
    before each event ask for the user's top-10 (seen excluded) and score a hit.
    ``on_model`` receives the trained bundle (the live benchmark serves the same one).

    With ``retrain_every`` N > 0 the live system itself is simulated too
    (:class:`training.evaluation.live.LiveReplay`): models retrained on every event so far
    after each N events, as the periodic trainer does with ``RECSYS_TRAIN_AFTER_EVENTS=N``
    (less its quality gate), and the reranker refitted every ``rerank_every`` events on the
    newest logged cases. So that the reranker has cases at the start of the test, the
    simulation starts ``warmup`` of the way into the training events (it runs over the
    newest training events first, scoring nothing there). ``live_hybrid_retrained`` is the
    blend alone; ``live_system`` the blend reordered by the reranker. ``on_live_model``
    receives (replay events so far, bundle with trees) at the start of the replay and at
    each change of the simulated system's model (the live benchmark publishes them at the
    same points). Those two rows start from a warm-up the deployed system does not have.

    ``deployed`` (with N > 0): the ``deployed`` row is the system as ``recsys up`` runs it,
    with nothing warmed up (:func:`training.evaluation.deployed.simulate_deployment`: the
    trainer's own runs every N events, its gate and its checked reranker)."""
    params = params or TrainParams()
    train, replay = temporal_split(dataset.interactions, fraction)
    if limit:
        replay = replay.iloc[:limit]
    if progress:
        progress("C: fitting blend weights on the newest 10% of training events")
    weights, val = fit_weights_temporal(train, dataset, params)
    if progress:
        progress("C: training on the oldest events")
    models = train_models(dataset, params, weights, interactions=train)
    bundle = models.bundle
    if on_model is not None:
        on_model(bundle)
    data = models.data
    rule = params.rule
    frozen: dict[str, tuple[UserHistory, np.ndarray]] = {}
    live: dict[str, list[tuple[int, float, float, float]]] = {}
    for u, uid in enumerate(data.users.ids):
        h = data.history(u)
        frozen[uid] = (h, models.als.user_factors[u])
        live[uid] = list(zip(h.item_idx.tolist(), h.confidence.tolist(), h.timestamps.tolist(),
                             h.ratings.tolist(), strict=True))
    # the stored vector only: the frozen model
    frozen_w = replace(weights, **{n: float(n == "cf") for n in COMPONENTS})
    names = ("popularity", "frozen_als", "live_als", "live_ease", "live_hybrid")
    hits: dict[str, list[int]] = {n: [] for n in names}
    skipped = 0
    started = time.perf_counter()
    pop = bundle.popularity.astype(np.float64)
    for row in replay.itertuples(index=False):
        uid = str(row.user_id)
        item = bundle.movies.get(str(row.movie_id))
        if item is None:
            skipped += 1
            continue
        hist_rows = live.setdefault(uid, [])
        history = history_of(hist_rows) if hist_rows else UserHistory.empty()
        seen = history.item_idx
        hits["popularity"].append(_rank(pop, seen, item))
        if uid in frozen:
            fh, fv = frozen[uid]
            comps = component_scores(bundle, fh, frozen_w, vector=fv)
            hits["frozen_als"].append(_rank(comps["cf"], seen, item))
        else:
            hits["frozen_als"].append(_rank(pop, seen, item))
        comps = component_scores(bundle, history, replace(weights, cf=1.0, item=1.0))
        if len(history):
            hits["live_als"].append(_rank(comps["cf"], seen, item))
            hits["live_ease"].append(_rank(comps["item"], seen, item))
        else:
            for n in ("live_als", "live_ease"):
                hits[n].append(_rank(pop, seen, item))
        # an empty history still has the popularity and stage components
        hits["live_hybrid"].append(_rank(_hybrid(comps, weights, pop), seen, item))
        apply_event(hist_rows, item, float(rule.from_ratings(row.rating)), float(row.timestamp),
               float(row.rating))
    elapsed = time.perf_counter() - started
    if retrain_every > 0:
        hits.update(_live_system(dataset, params, weights, train, replay, retrain_every,
                                 rerank_every, warmup, progress, on_live_model))
    if retrain_every > 0 and deployed:
        hits["deployed"] = _deployed(dataset, fraction, limit, retrain_every, rerank_every,
                                     progress)
    rows = {
        n: {
            "hr@10": float(np.mean([r < K for r in v])) if v else 0.0,
            "mrr@10": float(np.mean([1.0 / (r + 1) if r < K else 0.0 for r in v])) if v else 0.0,
        }
        for n, v in hits.items()
    }
    return {
        "protocol": "C",
        "train_fraction": fraction,
        "train_events": len(train),
        "replay_events": len(replay) - skipped,
        "skipped_unknown_movie": skipped,
        "retrain_every": retrain_every,
        "rerank_every": rerank_every if retrain_every > 0 else 0,
        "blend_weights": weights.to_dict(),
        "validation_ndcg@10": val,
        "events_per_second": (len(replay) - skipped) / elapsed if elapsed else 0.0,
        "models": rows,
    }


def _deployed(dataset: Dataset, fraction: float, limit: int | None, retrain_every: int,
              rerank_every: int, progress: Progress | None) -> list[int]:
    """Ranks of each replayed event's movie in the simulated deployment."""
    import tempfile
    from pathlib import Path

    from training.evaluation.deployed import simulate_deployment
    from training.settings import TrainerSettings

    settings = TrainerSettings(train_after_events=retrain_every,
                               train_rerank_every=rerank_every)
    with tempfile.TemporaryDirectory(prefix="recsys-deployed-") as tmp:
        out = simulate_deployment(settings, Path(tmp), fraction, limit, progress,
                                  dataset=dataset)
    return [r for r in out["ranks"] if r >= 0]


def _live_system(
    dataset: Dataset, params: TrainParams, weights: BlendWeights, train: pd.DataFrame,
    replay: pd.DataFrame, retrain_every: int, rerank_every: int, warmup: float,
    progress: Progress | None, on_model: Callable[[int, ModelBundle], None] | None = None,
) -> dict[str, list[int]]:
    """Ranks of each replayed event's movie in the simulated live system (blend alone and
    reranked), after a warm-up over the newest ``1 - warmup`` of the training events."""
    start = int(round(warmup * len(train)))
    if progress:
        progress(f"C: live system, warming up over training events {start}-{len(train)}")
    columns = list(train.columns)
    live = LiveReplay(dataset, params, weights, train.iloc[:start], retrain_every,
                      rerank_every, progress=progress)
    for row in train.iloc[start:].itertuples(index=False, name=None):
        live.step(row, columns)
    if on_model is not None:
        warm = live.events
        on_model(0, live.serving_bundle())
        live.on_change = lambda n: on_model(n - warm, live.serving_bundle())
    out: dict[str, list[int]] = {"live_hybrid_retrained": [], "live_system": []}
    for row in replay[columns].itertuples(index=False, name=None):
        ranks = live.step(row, columns)
        if ranks is not None:
            out["live_hybrid_retrained"].append(ranks[0])
            out["live_system"].append(ranks[1])
    return out


def _hybrid(comps: dict[str, np.ndarray], weights: BlendWeights, pop: np.ndarray) -> np.ndarray:
    """The blend of the components, or popularity when there is none (as recommend())."""
    return blend(comps, weights)[0] if comps else pop


def _rank(scores: np.ndarray, seen: np.ndarray, item: int) -> int:
    """0-based rank of ``item`` among unseen movies (K or more when outside the top K)."""
    idx, _ = top_k(scores, K, seen)
    where = np.flatnonzero(idx == item)
    return int(where[0]) if where.size else K
