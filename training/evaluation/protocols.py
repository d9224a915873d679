"""The three evaluation protocols (docs/evaluation.md): A top-N, B rating, C streaming."""

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
from recsys_core.dataset import Dataset
from recsys_core.history import UserHistory
from recsys_core.scoring import COMPONENTS, BlendWeights, blend, component_scores, top_k
from training.evaluation.blendfit import (
    Case,
    build_case_matrix,
    fit_blend_weights,
    top_lists,
    weight_vector,
)
from training.evaluation.splits import Stratify, stratified_split, temporal_split
from training.models.rating import fit_rating_model
from training.pipeline import TrainedModels, TrainParams, train_models

Progress = Callable[[str], None]
K = 10
#: single components reported beside the hybrid, by the model they stand for
SINGLES = {
    "als": "cf", "ease": "item", "session_ease": "session", "content": "content",
    "popularity": "popularity",
}


def _cases_for(models: TrainedModels, holdout: pd.DataFrame) -> tuple[list[Case], list[int]]:
    users = models.data.users
    movies = models.bundle.movies
    cases, user_idx = [], []
    for uid, group in holdout.groupby("user_id", sort=True):
        u = users.get(str(uid))
        if u is None:
            continue
        rel = {int(i) for i in movies.indices(group["movie_id"].astype(str), on_missing="drop")}
        if rel:
            cases.append(Case(models.data.history(u), rel))
            user_idx.append(u)
    return cases, user_idx


def _ranking_row(tops: np.ndarray, cases: list[Case], models: TrainedModels) -> dict[str, float]:
    rel = [c.relevant for c in cases]
    pop = np.asarray(models.data.binary.sum(axis=0)).ravel() / max(models.data.binary.shape[0], 1)
    return {
        "precision@10": metrics.precision_at_k(tops, rel, K),
        "recall@10": metrics.recall_at_k(tops, rel, K),
        "ndcg@10": metrics.ndcg_at_k(tops, rel, K),
        "map@10": metrics.map_at_k(tops, rel, K),
        "coverage@10": metrics.catalog_coverage(tops, models.bundle.n_items, K),
        "novelty@10": metrics.novelty(tops, pop, K),
        "diversity@10": metrics.intra_list_diversity(tops, models.bundle.content_vectors, K),
    }


def fit_weights_random(
    train: pd.DataFrame, dataset: Dataset, params: TrainParams, seed: int
) -> tuple[BlendWeights, float]:
    """Blend weights fitted on two inner per-user random splits of the training rows."""
    groups = []
    for inner_seed in (seed,):
        inner_train, inner_val = stratified_split(train, 0.9, "user", inner_seed)
        inner = train_models(dataset, params, interactions=inner_train)
        cases, _ = _cases_for(inner, inner_val)
        groups.append((inner.bundle, cases))
    # a random split has no "recent": the session signal reads the whole history, unweighted
    return fit_blend_weights(groups, decays=((1.0, 100_000),))


def protocol_topn(
    dataset: Dataset,
    params: TrainParams | None = None,
    seed: int = 42,
    stratify: Stratify = "user",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Protocol A: 75/25 stratified split, top-10 with training items excluded."""
    params = params or TrainParams()
    train, test = stratified_split(dataset.interactions, 0.75, stratify, seed)
    if progress:
        progress(f"A seed {seed}: fitting blend weights")
    weights, val_ndcg = fit_weights_random(train, dataset, params, seed)
    if progress:
        progress(f"A seed {seed}: training")
    models = train_models(dataset, params, weights, interactions=train)
    cases, _ = _cases_for(models, test)
    matrix = build_case_matrix(models.bundle, cases, weights)
    rows: dict[str, dict[str, float]] = {}
    for name, comp in SINGLES.items():
        w = np.array([1.0 if c == comp else 0.0 for c in COMPONENTS])
        rows[name] = _ranking_row(top_lists(matrix, w, K), cases, models)
    rows["hybrid"] = _ranking_row(top_lists(matrix, weight_vector(weights), K), cases, models)
    return {
        "protocol": "A",
        "seed": seed,
        "stratify": stratify,
        "train_rows": len(train),
        "test_rows": len(test),
        "users": len(cases),
        "blend_weights": weights.to_dict(),
        "validation_ndcg@10": val_ndcg,
        "models": rows,
    }


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


def fit_weights_temporal(
    train: pd.DataFrame, dataset: Dataset, params: TrainParams, max_cases: int = 2000
) -> tuple[BlendWeights, float]:
    """Blend weights fitted on next-event prediction over the newest 10% of ``train``."""
    inner_train, inner_val = temporal_split(train, 0.9)
    inner = train_models(dataset, params, interactions=inner_train)
    histories: dict[str, list[tuple[int, float, float, float]]] = {}
    base = inner.data
    for u, uid in enumerate(base.users.ids):
        h = base.history(u)
        histories[uid] = list(zip(h.item_idx.tolist(), h.confidence.tolist(),
                                  h.timestamps.tolist(), h.ratings.tolist(), strict=True))
    rule = params.rule
    cases: list[Case] = []
    step = max(1, len(inner_val) // max_cases)
    for n, row in enumerate(inner_val.itertuples(index=False)):
        item = inner.bundle.movies.get(str(row.movie_id))
        hist = histories.setdefault(str(row.user_id), [])
        if item is not None and hist and n % step == 0:
            cases.append(Case(_history(hist), {item}))
        if item is not None:
            _apply(hist, item, float(rule.from_ratings(row.rating)), float(row.timestamp),
                   float(row.rating))
    return fit_blend_weights([(inner.bundle, cases)])


def _history(rows: list[tuple[int, float, float, float]]) -> UserHistory:
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return UserHistory.build(arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3])


def _apply(
    hist: list[tuple[int, float, float, float]], item: int, conf: float, ts: float, rating: float
) -> None:
    for j, (i, *_rest) in enumerate(hist):
        if i == item:
            del hist[j]
            break
    hist.append((item, conf, ts, rating))


def protocol_stream(
    dataset: Dataset,
    params: TrainParams | None = None,
    fraction: float = 0.8,
    progress: Progress | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Protocol C, offline: train on the oldest ``fraction``, replay the rest in time order;
    before each event ask for the user's top-10 (seen excluded) and score a hit."""
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
    data = models.data
    rule = params.rule
    frozen: dict[str, tuple[UserHistory, np.ndarray]] = {}
    live: dict[str, list[tuple[int, float, float, float]]] = {}
    for u, uid in enumerate(data.users.ids):
        h = data.history(u)
        frozen[uid] = (h, models.als.user_factors[u])
        live[uid] = list(zip(h.item_idx.tolist(), h.confidence.tolist(), h.timestamps.tolist(),
                             h.ratings.tolist(), strict=True))
    frozen_w = replace(weights, item=0.0, session=0.0)  # stored vector only: the frozen model
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
        history = _history(hist_rows) if hist_rows else UserHistory.empty()
        seen = history.item_idx
        hits["popularity"].append(_rank(pop, seen, item))
        if uid in frozen:
            fh, fv = frozen[uid]
            comps = component_scores(bundle, fh, replace(frozen_w, cf=1.0), vector=fv)
            hits["frozen_als"].append(_rank(comps["cf"], seen, item))
        else:
            hits["frozen_als"].append(_rank(pop, seen, item))
        if len(history):
            comps = component_scores(bundle, history, replace(weights, cf=1.0, item=1.0))
            hits["live_als"].append(_rank(comps["cf"], seen, item))
            hits["live_ease"].append(_rank(comps["item"], seen, item))
            total, _ = blend(comps, weights)
            hits["live_hybrid"].append(_rank(total, seen, item))
        else:
            for n in ("live_als", "live_ease", "live_hybrid"):
                hits[n].append(_rank(pop, seen, item))
        _apply(hist_rows, item, float(rule.from_ratings(row.rating)), float(row.timestamp),
               float(row.rating))
    elapsed = time.perf_counter() - started
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
        "blend_weights": weights.to_dict(),
        "validation_ndcg@10": val,
        "events_per_second": (len(replay) - skipped) / elapsed if elapsed else 0.0,
        "models": rows,
    }


def _rank(scores: np.ndarray, seen: np.ndarray, item: int) -> int:
    """0-based rank of ``item`` among unseen movies (K or more when outside the top K)."""
    idx, _ = top_k(scores, K, seen)
    where = np.flatnonzero(idx == item)
    return int(where[0]) if where.size else K
