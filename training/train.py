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
from training.gate import GATE, GateDecision, check_gate, holdout_metrics
from training.pipeline import TrainedModels, TrainParams, train_models
from training.registry import ModelRegistry
from training.rerank_stage import update_reranker
from training.weights import fit_weights_temporal

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


def _current_metrics(registry: ModelRegistry) -> tuple[int | None, dict[str, Any] | None]:
    current = registry.current_version()
    if current is None:
        return None, None
    return current, dict(registry.manifest(current).get("metrics", {}))


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
) -> TrainingRun:
    """Fit the blend on next-event validation (or use ``weights``, else the current version's,
    else the defaults), measure holdout HR@10 / NDCG@10 on the newest ``holdout_fraction``
    of events (0: skip), train on every interaction and, with a registry, publish the result
    if it passes the quality gate (or ``force``); a refused version is saved, not made
    current. The caller holds the registry's trainer lock."""
    params = params or TrainParams()
    seconds: dict[str, float] = {}
    val: float | None = None
    start = time.perf_counter()
    if weights is None and fit_weights:
        if progress:
            progress("blend weights")
        weights, val = fit_weights_temporal(
            dataset.interactions, dataset, params, max_cases=max_cases
        )
    if weights is None and registry is not None:
        weights = previous_weights(registry)
    weights = weights or BlendWeights()  # nothing published yet: the defaults
    seconds["blend_weights"] = time.perf_counter() - start
    holdout: dict[str, float | int] = {}
    if holdout_fraction > 0:
        if progress:
            progress("holdout")
        t = time.perf_counter()
        holdout = holdout_metrics(dataset, dataset.interactions, params, weights,
                                  holdout_fraction, holdout_max_events)
        seconds["holdout"] = time.perf_counter() - t
    version = registry.next_version() if registry is not None else 1
    models = train_models(dataset, params, weights, version=version, progress=progress)
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
        current, current_metrics = _current_metrics(registry)
        decision = check_gate(manifest["metrics"], current_metrics, current, gate_tolerance)
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
