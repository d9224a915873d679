"""Holdout quality of a candidate model and the gate that decides whether it may go live.

The holdout is the newest ``fraction`` of events: a model trained on the older part is
asked, before each sampled holdout event, for the user's top 10 (seen movies excluded), as in
protocol C (docs/evaluation.md). Every holdout event then joins the user's live history.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import Counter

from recsys_core.dataset import Dataset
from recsys_core.errors import EmptyTrainingData
from recsys_core.history import UserHistory
from recsys_core.scoring import BlendWeights, blend, component_scores, top_k
from training.evaluation.splits import temporal_split
from training.pipeline import TrainParams, train_models
from training.weights import HistoryRows, apply_event, history_of

log = logging.getLogger(__name__)

K = 10
HR_KEY = "holdout_hr@10"
NDCG_KEY = "holdout_ndcg@10"
#: fewer events than this in the window cannot give a holdout worth measuring
MIN_EVENTS = 20

GATE = Counter("recsys_trainer_gate_total", "Quality-gate decisions on new model versions",
               ["outcome"])


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    candidate_hr: float | None
    current_hr: float | None
    current_version: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "candidate_hr@10": self.candidate_hr,
                "current_hr@10": self.current_hr, "current_version": self.current_version}


def holdout_metrics(
    dataset: Dataset,
    interactions: pd.DataFrame,
    params: TrainParams,
    weights: BlendWeights,
    fraction: float = 0.1,
    max_events: int = 1000,
) -> dict[str, float | int]:
    """Next-event HR@10 and NDCG@10 on the newest ``fraction`` of ``interactions`` (at most
    ``max_events`` of them scored, evenly spaced in time)."""
    if len(interactions) < MIN_EVENTS:
        raise EmptyTrainingData(
            f"the training window holds {len(interactions)} events; at least {MIN_EVENTS} are "
            "needed to measure a holdout")
    train, holdout = temporal_split(interactions, 1.0 - fraction)
    if len(train) == 0 or len(holdout) == 0:
        raise EmptyTrainingData(f"holdout fraction {fraction} leaves an empty train or holdout")
    models = train_models(dataset, params, weights, interactions=train)
    bundle, data, rule = models.bundle, models.data, params.rule
    pop = bundle.popularity.astype(np.float64)
    step = max(1, math.ceil(len(holdout) / max(1, max_events)))
    user_ids = holdout["user_id"].astype(str).to_numpy()
    # only the users of scored events need a live history (another user's events change
    # nothing they are scored on): on 10M events this saves a minute and gigabytes
    scored_users = set(user_ids[::step].tolist())
    live: dict[str, HistoryRows] = {}
    for uid in scored_users:
        u = data.users.get(uid)
        if u is not None:
            h = data.history(u)
            live[uid] = list(zip(h.item_idx.tolist(), h.confidence.tolist(),
                                 h.timestamps.tolist(), h.ratings.tolist(), strict=True))
    ranks: list[int] = []
    completions = (holdout["completion"] if "completion" in holdout.columns
                   else pd.Series(np.nan, index=holdout.index)).to_numpy(np.float64)
    rows = np.flatnonzero(pd.Series(user_ids).isin(scored_users).to_numpy())
    movie_ids = holdout["movie_id"].astype(str).to_numpy()
    ratings = holdout["rating"].to_numpy(np.float64)
    times = holdout["timestamp"].to_numpy(np.float64)
    for n in rows.tolist():
        uid, mid, rating, completion, ts = (user_ids[n], movie_ids[n], ratings[n],
                                            completions[n], times[n])
        item = bundle.movies.get(mid)
        if item is None:
            continue
        hist = live.setdefault(uid, [])
        if n % step == 0:
            history = history_of(hist) if hist else UserHistory.empty()
            comps = component_scores(bundle, history, weights)
            scores = blend(comps, weights)[0] if comps else pop
            ranks.append(_rank(scores, history.item_idx, item))
        conf = rule.combine(None if math.isnan(rating) else float(rating),
                            None if math.isnan(completion) else float(completion))
        apply_event(hist, item, conf, float(ts), float(rating))
    hits = np.asarray(ranks)
    return {
        HR_KEY: float(np.mean(hits < K)) if hits.size else 0.0,
        NDCG_KEY: float(np.mean(np.where(hits < K, 1.0 / np.log2(hits + 2.0), 0.0)))
        if hits.size else 0.0,
        "holdout_events": len(holdout),
        "holdout_scored": int(hits.size),
        "holdout_train_events": len(train),
    }


def _rank(scores: np.ndarray, seen: np.ndarray, item: int) -> int:
    """0-based rank of ``item`` among unseen movies (K when outside the top K)."""
    idx, _ = top_k(scores, K, seen)
    where = np.flatnonzero(idx == item)
    return int(where[0]) if where.size else K


def check_gate(
    candidate: dict[str, Any],
    current: dict[str, Any] | None,
    current_version: int | None,
    tolerance: float,
) -> GateDecision:
    """Pass unless the candidate's holdout HR@10 is worse than the current version's by more
    than ``tolerance`` (absolute). ``candidate`` and ``current`` are manifests' ``metrics``."""
    cand = candidate.get(HR_KEY)
    cand_hr = float(cand) if isinstance(cand, int | float) else None
    cur = (current or {}).get(HR_KEY)
    cur_hr = float(cur) if isinstance(cur, int | float) else None
    if current is None:
        reason, passed = "no current version", True
    elif cur_hr is None:
        reason, passed = f"current version {current_version} has no holdout metric", True
    elif cand_hr is None:
        reason, passed = "candidate has no holdout metric", False
    elif cand_hr < cur_hr - tolerance:
        reason = (f"holdout HR@10 {cand_hr:.4f} is worse than current version "
                  f"{current_version}'s {cur_hr:.4f} by more than {tolerance}")
        passed = False
    else:
        reason = (f"holdout HR@10 {cand_hr:.4f} vs current version {current_version}'s "
                  f"{cur_hr:.4f} (tolerance {tolerance})")
        passed = True
    return GateDecision(passed, reason, cand_hr, cur_hr, current_version)
