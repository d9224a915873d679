"""One training run: blend weights, holdout metrics, every model, the quality gate, publish."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recsys_core.dataset import Dataset
from recsys_core.errors import ModelNotLoaded
from recsys_core.scoring import BlendWeights
from recsys_core.surfaces import DEFAULT_SURFACE, UP_NEXT
from training.gate import (
    GATE,
    REFERENCES,
    GateDecision,
    accepted_recipes,
    check_gate,
    measure_holdout,
)
from training.pipeline import TrainedModels, TrainParams, train_models
from training.registry import ModelRegistry
from training.rerank_stage import update_reranker
from training.weights import fit_surface_weights

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class TrainingRun:
    models: TrainedModels
    weights: BlendWeights
    validation_ndcg: float | None
    seconds: dict[str, float]
    published: bool
    gate: GateDecision | None = None

    @property
    def version(self) -> int:
        return self.models.bundle.version

    @property
    def metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.models.bundle.manifest["metrics"]
        return metrics


def previous_weights(registry: ModelRegistry) -> BlendWeights | None:
    try:
        current = registry.current_version()
        if current is None:
            return None
        return BlendWeights.from_dict(registry.manifest(current).get("blend_weights", {}))
    except ModelNotLoaded:
        return None


def previous_surfaces(registry: ModelRegistry) -> dict[str, Any] | None:
    """The current version's surfaces, carried over when weights are not refitted."""
    try:
        current = registry.current_version()
        if current is None:
            return None
        found = registry.manifest(current).get("surfaces")
        return dict(found) if isinstance(found, dict) else None
    except ModelNotLoaded:
        return None


def run_training(
    dataset: Dataset,
    registry: ModelRegistry | None,
    params: TrainParams | None = None,
    fit_weights: bool = True,
    max_cases: int = 1000,
    progress: Progress | None = None,
    *,
    weights: BlendWeights | None = None,
    holdout_fraction: float = 0.1,
    holdout_max_events: int = 1000,
    gate_tolerance: float = 0.02,
    force: bool = False,
    rerank_every: int = 0,
    gate_references: int = REFERENCES,
) -> TrainingRun:
    """Fit the blend on next-event validation (or use ``weights``, else the current version's,
    else the defaults), measure holdout HR@10 / NDCG@10 on the newest ``holdout_fraction``
    of events (0: skip), train on every interaction and, with a registry, publish the result
    if it passes the quality gate (or ``force``); a refused version is saved, not made
    current. The gate compares the candidate with the recipes of the newest
    ``gate_references`` accepted versions trained and scored on the same holdout
    (:mod:`training.gate`). The caller holds the registry's trainer lock."""
    params = params or TrainParams()
    seconds: dict[str, float] = {}
    val: float | None = None
    start = time.perf_counter()
    surfaces: dict[str, Any] | None = None
    if weights is None and fit_weights:
        if progress:
            progress("blend weights")
        # every surface's weights, as `recsys eval` fits them (training/weights.py)
        fit = fit_surface_weights(dataset.interactions, dataset, params, max_cases=max_cases)
        weights, val = fit.weights[UP_NEXT], fit.validation[UP_NEXT]
        surfaces = fit.manifest()
    if weights is None and registry is not None:
        weights = previous_weights(registry)
        surfaces = previous_surfaces(registry)
    weights = weights or BlendWeights()  # nothing published yet: the defaults
    seconds["blend_weights"] = time.perf_counter() - start
    holdout: dict[str, float | int] = {}
    references: dict[int, float] = {}
    current = registry.current_version() if registry is not None else None
    if holdout_fraction > 0:
        if progress:
            progress("holdout")
        t = time.perf_counter()
        recipes = (accepted_recipes(registry, gate_references)
                   if registry is not None and gate_references > 0 else {})
        measured = measure_holdout(dataset, dataset.interactions, params, weights,
                                   holdout_fraction, holdout_max_events, recipes)
        holdout, references = measured.metrics, measured.references
        seconds["holdout"] = time.perf_counter() - t
    version = registry.next_version() if registry is not None else 1
    models = train_models(dataset, params, weights, version=version, progress=progress,
                          surfaces=surfaces, default_surface=DEFAULT_SURFACE)
    seconds.update({f"train_{k}": v for k, v in models.timings.items()})
    manifest = models.bundle.manifest
    manifest["metrics"].update(holdout)
    if val is not None:
        manifest["metrics"]["validation_ndcg@10"] = val
    published = False
    decision: GateDecision | None = None
    if registry is not None and rerank_every > 0:
        if progress:
            progress("reranker")
        t = time.perf_counter()
        outcome = update_reranker(dataset, params, registry, models.bundle, rerank_every)
        log.info("reranker: %d new cases, %d kept, refitted: %s, has trees: %s",
                 outcome.new_cases, outcome.cases, outcome.refitted, outcome.has_trees)
        seconds["reranker"] = time.perf_counter() - t
    if registry is not None:
        if progress:
            progress("publish")
        t = time.perf_counter()
        decision = check_gate(manifest["metrics"], references, current, gate_tolerance)
        manifest["gate"] = {**decision.to_dict(), "forced": force and not decision.passed}
        if decision.passed or force:
            registry.publish(models.bundle)
            published = True
            GATE.labels("passed" if decision.passed else "forced").inc()
            log.info("published model version %d: %s", version, decision.reason,
                     extra={"model_version": version})
        else:
            registry.save(models.bundle)
            GATE.labels("refused").inc()
            log.warning("quality gate refused model version %d (saved, not published): %s",
                        version, decision.reason, extra={"model_version": version})
        seconds["publish"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    return TrainingRun(models, weights, val, seconds, published, decision)
