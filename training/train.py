"""One training run: fit blend weights, train every model, publish a new version."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from recsys_core.dataset import Dataset
from recsys_core.errors import ModelNotLoaded
from recsys_core.scoring import BlendWeights
from training.pipeline import TrainedModels, TrainParams, train_models
from training.registry import ModelRegistry
from training.weights import fit_weights_temporal

Progress = Callable[[str], None]


@dataclass
class TrainingRun:
    models: TrainedModels
    weights: BlendWeights
    validation_ndcg: float | None
    seconds: dict[str, float]
    published: bool


def previous_weights(registry: ModelRegistry) -> BlendWeights | None:
    try:
        current = registry.current_version()
        if current is None:
            return None
        return BlendWeights.from_dict(registry.manifest(current).get("blend_weights", {}))
    except ModelNotLoaded:
        return None


def run_training(
    dataset: Dataset,
    registry: ModelRegistry | None,
    params: TrainParams | None = None,
    fit_weights: bool = True,
    max_cases: int = 1000,
    progress: Progress | None = None,
) -> TrainingRun:
    """Fit the blend on next-event validation (or reuse the current version's weights, or the
    defaults when none is published), train on every interaction and, with a registry,
    publish the result."""
    params = params or TrainParams()
    seconds: dict[str, float] = {}
    val: float | None = None
    start = time.perf_counter()
    weights = previous_weights(registry) if registry is not None else None
    if not fit_weights and weights is None:
        weights = BlendWeights()  # nothing published yet: the defaults
    if fit_weights:
        if progress:
            progress("blend weights")
        weights, val = fit_weights_temporal(
            dataset.interactions, dataset, params, max_cases=max_cases
        )
    seconds["blend_weights"] = time.perf_counter() - start
    version = registry.next_version() if registry is not None else 1
    models = train_models(dataset, params, weights, version=version, progress=progress)
    seconds.update({f"train_{k}": v for k, v in models.timings.items()})
    if val is not None:
        models.bundle.manifest["metrics"]["validation_ndcg@10"] = val
    published = False
    if registry is not None:
        if progress:
            progress("publish")
        t = time.perf_counter()
        registry.publish(models.bundle)
        seconds["publish"] = time.perf_counter() - t
        published = True
    seconds["total"] = time.perf_counter() - start
    return TrainingRun(models, weights, val, seconds, published)
