"""Blend weights fitted on validation data, one set per surface (:mod:`recsys_core.surfaces`):
``for_you`` on held-out taste (a random per-user split, as protocol A), ``up_next`` on
next-event prediction over the newest events (as protocol C and the live system).

:func:`fit_surface_weights` is what the trainer runs and what ``recsys eval`` runs on a
protocol's training part, so that an evaluated weighting is the one that would be published.
Histories are scored capped at ``params.history_cap`` newest movies, as the stream keeps them
in Redis; the movies left out are still excluded from a top-k (everything seen is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from recsys_core.artifacts import ModelBundle
from recsys_core.dataset import Dataset
from recsys_core.history import UserHistory
from recsys_core.scoring import BlendWeights
from recsys_core.surfaces import FOR_YOU, UP_NEXT
from recsys_core.vocab import Vocabulary
from training.evaluation.blendfit import Case, fit_blend_weights
from training.evaluation.splits import stratified_split, temporal_split
from training.pipeline import TrainedModels, TrainParams, train_models

HistoryRows = list[tuple[int, float, float, float]]
#: a random split has no "recent": the session signal reads the whole history, unweighted
WHOLE_HISTORY = ((1.0, 100_000),)
#: share of each user's training rows held out for the taste surface's fit
TASTE_HOLDOUT = 0.1
#: share of the newest events held out for the next-event fit
NEXT_EVENT_HOLDOUT = 0.1


def capped(history: UserHistory, cap: int | None, movies: Vocabulary) -> UserHistory:
    """The newest ``cap`` movies of ``history``, as the stream's Redis state keeps them (by
    last interaction time; at equal times the higher movie id, as a sorted set orders
    members). The whole history when ``cap`` is None or not exceeded."""
    n = len(history)
    if cap is None or n <= cap:
        return history
    raw = np.asarray(movies.raws(history.item_idx), dtype=object)
    order = np.lexsort((raw, history.timestamps))[n - cap:]
    order.sort()  # keep the oldest-first order of the history
    return UserHistory(history.item_idx[order], history.confidence[order],
                       history.timestamps[order], history.ratings[order])


def holdout_cases(
    models: TrainedModels, holdout: pd.DataFrame, cap: int | None = None
) -> tuple[list[Case], list[int]]:
    """One case per user of ``holdout``: the user's training history (scored capped at
    ``cap``, every training movie excluded) and the held-out movies as relevant."""
    users = models.data.users
    movies = models.bundle.movies
    cases, user_idx = [], []
    for uid, group in holdout.groupby("user_id", sort=True):
        u = users.get(str(uid))
        if u is None:
            continue
        rel = {int(i) for i in movies.indices(group["movie_id"].astype(str), on_missing="drop")}
        if rel:
            full = models.data.history(u)
            cases.append(Case(capped(full, cap, movies), rel, full.item_idx))
            user_idx.append(u)
    return cases, user_idx


def taste_group(
    interactions: pd.DataFrame, dataset: Dataset, params: TrainParams
) -> tuple[ModelBundle, list[Case]]:
    """Models trained on a per-user random 90 % of ``interactions`` (seed ``params.seed``)
    and one case per user with the other 10 % as relevant."""
    inner_train, inner_val = stratified_split(interactions, 1.0 - TASTE_HOLDOUT, "user",
                                              params.seed)
    inner = train_models(dataset, params, interactions=inner_train)
    cases, _ = holdout_cases(inner, inner_val, params.history_cap)
    return inner.bundle, cases


def next_event_group(
    interactions: pd.DataFrame, dataset: Dataset, params: TrainParams, max_cases: int = 1000
) -> tuple[ModelBundle, list[Case]]:
    """Models trained on the oldest 90 % of ``interactions`` and up to ``max_cases``
    next-event cases from the newest 10 %, each asked before its event is applied."""
    inner_train, inner_val = temporal_split(interactions, 1.0 - NEXT_EVENT_HOLDOUT)
    inner = train_models(dataset, params, interactions=inner_train)
    histories: dict[str, HistoryRows] = {}
    base = inner.data
    movies = inner.bundle.movies
    for u, uid in enumerate(base.users.ids):
        h = base.history(u)
        histories[uid] = list(zip(h.item_idx.tolist(), h.confidence.tolist(),
                                  h.timestamps.tolist(), h.ratings.tolist(), strict=True))
    rule = params.rule
    cases: list[Case] = []
    step = max(1, len(inner_val) // max(1, max_cases))
    for n, row in enumerate(inner_val.itertuples(index=False)):
        item = movies.get(str(row.movie_id))
        hist = histories.setdefault(str(row.user_id), [])
        # a user's first event counts too: the live system answers cold starts with the
        # same blend (popularity and stage popularity), so their weights are fitted here
        if item is not None and n % step == 0:
            full = history_of(hist)
            cases.append(Case(capped(full, params.history_cap, movies), {item}, full.item_idx))
        if item is not None:
            apply_event(hist, item, float(rule.from_ratings(row.rating)), float(row.timestamp),
                        float(row.rating))
    return inner.bundle, cases


@dataclass
class SurfaceFit:
    """Each surface's fitted weights and its validation NDCG@10 (on its own cases)."""

    weights: dict[str, BlendWeights]
    validation: dict[str, float] = field(default_factory=dict)

    def manifest(self) -> dict[str, dict[str, Any]]:
        return {name: {"blend_weights": w.to_dict(),
                       "validation_ndcg@10": self.validation.get(name)}
                for name, w in self.weights.items()}


def fit_surface_weights(
    interactions: pd.DataFrame,
    dataset: Dataset,
    params: TrainParams,
    max_cases: int = 1000,
    surfaces: Sequence[str] = (FOR_YOU, UP_NEXT),
) -> SurfaceFit:
    """Every surface's blend weights, fitted on ``interactions`` only: ``for_you`` on the
    held-out taste cases (whole history read unweighted by the session signal), ``up_next``
    on the next-event cases (recency settings chosen there too)."""
    fit = SurfaceFit({})
    if FOR_YOU in surfaces:
        w, val = fit_blend_weights([taste_group(interactions, dataset, params)],
                                   decays=WHOLE_HISTORY)
        fit.weights[FOR_YOU], fit.validation[FOR_YOU] = w, val
    if UP_NEXT in surfaces:
        w, val = fit_blend_weights([next_event_group(interactions, dataset, params,
                                                     max_cases)])
        fit.weights[UP_NEXT], fit.validation[UP_NEXT] = w, val
    return fit


def fit_weights_random(
    train: pd.DataFrame, dataset: Dataset, params: TrainParams, seed: int | None = None
) -> tuple[BlendWeights, float]:
    """The ``for_you`` weights alone (inner split seeded with ``seed``, else
    ``params.seed``)."""
    if seed is not None and seed != params.seed:
        params = replace(params, seed=seed)
    fit = fit_surface_weights(train, dataset, params, surfaces=(FOR_YOU,))
    return fit.weights[FOR_YOU], fit.validation[FOR_YOU]


def fit_weights_temporal(
    train: pd.DataFrame, dataset: Dataset, params: TrainParams, max_cases: int = 1000
) -> tuple[BlendWeights, float]:
    """The ``up_next`` weights alone: next-event prediction over the newest 10 % of
    ``train``."""
    fit = fit_surface_weights(train, dataset, params, max_cases, surfaces=(UP_NEXT,))
    return fit.weights[UP_NEXT], fit.validation[UP_NEXT]


def history_of(rows: HistoryRows) -> UserHistory:
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return UserHistory.build(arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3])


def apply_event(
    hist: HistoryRows, item: int, conf: float, ts: float, rating: float
) -> None:
    for j, (i, *_rest) in enumerate(hist):
        if i == item:
            del hist[j]
            break
    hist.append((item, conf, ts, rating))
