"""Holdout quality of a candidate model and the gate that decides whether it may go live.

The holdout is the newest ``fraction`` of events: a model trained on the older part is
asked, before each sampled holdout event, for the user's top 10 (seen movies excluded), as in
protocol C (docs/evaluation.md). Every holdout event then joins the user's live history.

The gate compares like with like. The current version's bundle was trained on most of the
candidate's holdout events, so its own figure there would be inflated, and the figure in
its manifest was measured on an older window. Instead each reference version's recipe
(its training parameters and blend weights, from its manifest) is trained on the same
older part and scored on the same holdout events as the candidate. The references are the
current version and the versions accepted before it (the newest :data:`REFERENCES` kept on
disk): the candidate must come within the tolerance of the best of them, so a run of
small losses cannot walk the reference down step by step. It must also come within the
tolerance of popularity on the same events, the floor under any useful model. A recipe
equal to the candidate's scores what the candidate scores and is not trained again.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import Counter

from recsys_core.dataset import Dataset
from recsys_core.errors import EmptyTrainingData, ModelNotLoaded
from recsys_core.history import UserHistory
from recsys_core.scoring import BlendWeights, blend, component_scores, top_k
from training.evaluation.splits import temporal_split
from training.pipeline import TrainedModels, TrainParams, train_models
from training.registry import ModelRegistry
from training.weights import HistoryRows, apply_event, history_of

log = logging.getLogger(__name__)

K = 10
HR_KEY = "holdout_hr@10"
NDCG_KEY = "holdout_ndcg@10"
POPULARITY_KEY = "holdout_popularity_hr@10"
#: fewer events than this in the window cannot give a holdout worth measuring
MIN_EVENTS = 20
#: accepted versions (the current one first) whose recipes the candidate is compared with
REFERENCES = 3

GATE = Counter("recsys_trainer_gate_total", "Quality-gate decisions on new model versions",
               ["outcome"])


@dataclass(frozen=True)
class Recipe:
    """What a version was trained with, so it can be trained again on other events."""

    params: TrainParams
    weights: BlendWeights

    def key(self) -> str:
        return json.dumps([self.params.to_dict(), self.weights.to_dict()], sort_keys=True,
                          default=str)

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> Recipe:
        stored = manifest.get("params", {})
        names = {f.name for f in fields(TrainParams)}
        params = TrainParams(**{k: v for k, v in stored.items() if k in names})
        return cls(params, BlendWeights.from_dict(manifest.get("blend_weights", {})))


def accepted_recipes(registry: ModelRegistry, limit: int = REFERENCES) -> dict[int, Recipe]:
    """The recipes of the current version and of the versions accepted before it (newest
    first, at most ``limit``): published through the gate, forced, or from before it."""
    current = registry.current_version()
    if current is None:
        return {}
    out: dict[int, Recipe] = {}
    for v in sorted((v for v in registry.versions() if v <= current), reverse=True):
        try:
            manifest = registry.manifest(v)
        except ModelNotLoaded:
            continue
        gate = manifest.get("gate") or {}
        if v == current or gate.get("passed", True) or gate.get("forced"):
            out[v] = Recipe.of(manifest)
        if len(out) >= limit:
            break
    return out


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    candidate_hr: float | None
    #: the best reference figure on the same holdout events
    current_hr: float | None
    current_version: int | None
    reference_version: int | None = None
    references: dict[int, float] = field(default_factory=dict)
    floor_hr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "candidate_hr@10": self.candidate_hr,
                "current_hr@10": self.current_hr, "current_version": self.current_version,
                "reference_version": self.reference_version,
                "references_hr@10": {str(v): hr for v, hr in self.references.items()},
                "popularity_hr@10": self.floor_hr}


@dataclass
class Holdout:
    """The candidate's holdout metrics and each reference version's HR@10 on the same
    events."""

    metrics: dict[str, float | int]
    references: dict[int, float] = field(default_factory=dict)


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
    return measure_holdout(dataset, interactions, params, weights, fraction, max_events).metrics


def measure_holdout(
    dataset: Dataset,
    interactions: pd.DataFrame,
    params: TrainParams,
    weights: BlendWeights,
    fraction: float = 0.1,
    max_events: int = 1000,
    references: dict[int, Recipe] | None = None,
) -> Holdout:
    """:func:`holdout_metrics`, popularity's HR@10 on the same events, and each reference
    recipe trained on the same older part and scored on the same events."""
    if len(interactions) < MIN_EVENTS:
        raise EmptyTrainingData(
            f"the training window holds {len(interactions)} events; at least {MIN_EVENTS} are "
            "needed to measure a holdout")
    train, holdout = temporal_split(interactions, 1.0 - fraction)
    if len(train) == 0 or len(holdout) == 0:
        raise EmptyTrainingData(f"holdout fraction {fraction} leaves an empty train or holdout")
    step = max(1, math.ceil(len(holdout) / max(1, max_events)))
    models = train_models(dataset, params, weights, interactions=train)
    ranks, pop_ranks = _replay(models, holdout, weights, params, step)
    metrics: dict[str, float | int] = {
        HR_KEY: _hr(ranks),
        NDCG_KEY: float(np.mean(np.where(ranks < K, 1.0 / np.log2(ranks + 2.0), 0.0)))
        if ranks.size else 0.0,
        POPULARITY_KEY: _hr(pop_ranks),
        "holdout_events": len(holdout),
        "holdout_scored": int(ranks.size),
        "holdout_train_events": len(train),
        "holdout_from_timestamp": int(holdout["timestamp"].min()),
    }
    out = Holdout(metrics)
    own = Recipe(params, weights).key()
    done: dict[str, float] = {own: metrics[HR_KEY]}
    for version, recipe in (references or {}).items():
        key = recipe.key()
        if key not in done:
            ref = train_models(dataset, recipe.params, recipe.weights, interactions=train)
            done[key] = _hr(_replay(ref, holdout, recipe.weights, recipe.params, step)[0])
        out.references[version] = done[key]
    return out


def _hr(ranks: np.ndarray) -> float:
    return float(np.mean(ranks < K)) if ranks.size else 0.0


def _replay(models: TrainedModels, holdout: pd.DataFrame, weights: BlendWeights,
            params: TrainParams, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of every ``step``-th holdout event's movie under the blend and under
    popularity, each event joining its user's history after it is scored."""
    bundle, data, rule = models.bundle, models.data, params.rule
    pop = bundle.popularity.astype(np.float64)
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
    pop_ranks: list[int] = []
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
            pop_ranks.append(_rank(pop, history.item_idx, item))
        conf = rule.combine(None if math.isnan(rating) else float(rating),
                            None if math.isnan(completion) else float(completion))
        apply_event(hist, item, conf, float(ts), float(rating))
    return np.asarray(ranks, dtype=np.int64), np.asarray(pop_ranks, dtype=np.int64)


def _rank(scores: np.ndarray, seen: np.ndarray, item: int) -> int:
    """0-based rank of ``item`` among unseen movies (K when outside the top K)."""
    idx, _ = top_k(scores, K, seen)
    where = np.flatnonzero(idx == item)
    return int(where[0]) if where.size else K


def check_gate(
    candidate: dict[str, Any],
    references: dict[int, float],
    current_version: int | None,
    tolerance: float,
) -> GateDecision:
    """Pass unless the candidate's holdout HR@10 is worse by more than ``tolerance``
    (absolute) than the best of the ``references`` (version → HR@10 on the same holdout
    events) or than popularity on them. ``candidate`` is the manifest's ``metrics``."""
    cand = candidate.get(HR_KEY)
    cand_hr = float(cand) if isinstance(cand, int | float) else None
    pop = candidate.get(POPULARITY_KEY)
    floor = float(pop) if isinstance(pop, int | float) else None
    best_v = max(references, key=lambda v: (references[v], v)) if references else None
    best = references[best_v] if best_v is not None else None
    same = "on the same holdout events"
    if current_version is None:
        reason, passed = "no current version", True
    elif cand_hr is None:
        reason, passed = "candidate has no holdout metric", False
    elif best is None:
        reason, passed = f"no recipe of current version {current_version} to compare", True
    elif cand_hr < best - tolerance:
        reason = (f"holdout HR@10 {cand_hr:.4f} is worse than version {best_v}'s {best:.4f} "
                  f"{same} by more than {tolerance}")
        if best_v == current_version:
            reason = reason.replace(f"version {best_v}", f"current version {best_v}")
        passed = False
    elif floor is not None and cand_hr < floor - tolerance:
        reason = (f"holdout HR@10 {cand_hr:.4f} is worse than popularity's {floor:.4f} "
                  f"{same} by more than {tolerance}")
        passed = False
    else:
        reason = (f"holdout HR@10 {cand_hr:.4f} vs {best:.4f} for version {best_v}, the best "
                  f"of versions {sorted(references)} {same} (tolerance {tolerance})")
        passed = True
    return GateDecision(passed, reason, cand_hr, best, current_version, best_v,
                        dict(references), floor)
