"""Blend weights fitted on validation data: a random per-user split (for the top-N
protocol) or next-event prediction on the newest events (for the live system)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_core.dataset import Dataset
from recsys_core.history import UserHistory
from recsys_core.scoring import BlendWeights
from training.evaluation.blendfit import Case, fit_blend_weights
from training.evaluation.splits import stratified_split, temporal_split
from training.pipeline import TrainedModels, TrainParams, train_models

HistoryRows = list[tuple[int, float, float, float]]


def holdout_cases(models: TrainedModels, holdout: pd.DataFrame) -> tuple[list[Case], list[int]]:
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


def fit_weights_random(
    train: pd.DataFrame, dataset: Dataset, params: TrainParams, seed: int
) -> tuple[BlendWeights, float]:
    """Blend weights fitted on two inner per-user random splits of the training rows."""
    groups = []
    for inner_seed in (seed,):
        inner_train, inner_val = stratified_split(train, 0.9, "user", inner_seed)
        inner = train_models(dataset, params, interactions=inner_train)
        cases, _ = holdout_cases(inner, inner_val)
        groups.append((inner.bundle, cases))
    # a random split has no "recent": the session signal reads the whole history, unweighted
    return fit_blend_weights(groups, decays=((1.0, 100_000),))


def fit_weights_temporal(
    train: pd.DataFrame, dataset: Dataset, params: TrainParams, max_cases: int = 1000
) -> tuple[BlendWeights, float]:
    """Blend weights fitted on next-event prediction over the newest 10% of ``train``."""
    inner_train, inner_val = temporal_split(train, 0.9)
    inner = train_models(dataset, params, interactions=inner_train)
    histories: dict[str, HistoryRows] = {}
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
        # a user's first event counts too: the live system answers cold starts with the
        # same blend (popularity and stage popularity), so their weights are fitted here
        if item is not None and n % step == 0:
            cases.append(Case(history_of(hist), {item}))
        if item is not None:
            apply_event(hist, item, float(rule.from_ratings(row.rating)), float(row.timestamp),
                   float(row.rating))
    return fit_blend_weights([(inner.bundle, cases)])


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
