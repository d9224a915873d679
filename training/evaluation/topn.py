"""Protocol A (top-N) through the trainer's path (docs/evaluation.md).

The split's training part is given to the trainer's own code as its whole dataset: rows read
as the trainer reads them, every surface's blend weights fitted on them by
:func:`training.weights.fit_surface_weights`, every model trained on them. Each surface then
ranks every test user's top-10 as the API does: the surface's weights, the history scored
capped at ``params.history_cap`` newest movies, every training movie excluded. So the figure
is the one the served product gets (``benchmarks/served_topn.py`` measures it over HTTP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys_core import metrics
from recsys_core.artifacts import ModelBundle
from recsys_core.dataset import Dataset
from recsys_core.scoring import COMPONENTS, BlendWeights
from recsys_core.surfaces import DEFAULT_SURFACE, UP_NEXT, default_surface, surfaces_of
from training.evaluation.blendfit import Case, build_case_matrix, top_lists, weight_vector
from training.evaluation.splits import Stratify, stratified_split
from training.pipeline import TrainedModels, TrainParams, train_models
from training.trainer import merge_interactions
from training.weights import fit_surface_weights, holdout_cases

Progress = Callable[[str], None]
K = 10
#: single components reported beside the surfaces, by the model they stand for
SINGLES = {
    "als": "cf", "ease": "item", "session_ease": "session", "content": "content",
    "popularity": "popularity",
}


def trainer_rows(interactions: pd.DataFrame) -> pd.DataFrame:
    """``interactions`` as the trainer reads a dataset of them (``merge_interactions``: ids
    as strings, de-duplicated, in time order, stable)."""
    return merge_interactions(interactions, interactions.iloc[:0])


def publishable_models(
    dataset: Dataset, train: pd.DataFrame, params: TrainParams, progress: Progress | None = None,
    label: str = "",
) -> TrainedModels:
    """What the trainer publishes given ``train`` as its whole dataset: every surface's
    weights fitted on ``train`` by the trainer's own code, then every model trained on it
    (no reranker: a first version has no logged cases to fit one on)."""
    if progress:
        progress(f"{label}fitting every surface's blend weights")
    fit = fit_surface_weights(train, dataset, params)
    if progress:
        progress(f"{label}training")
    return train_models(dataset, params, fit.weights[UP_NEXT], interactions=train,
                        surfaces=fit.manifest(), default_surface=DEFAULT_SURFACE)


def surface_tops(bundle: ModelBundle, cases: list[Case], k: int = K) -> dict[str, np.ndarray]:
    """Each surface's top-k of every case, as the API ranks them (the surface's weights and
    recency settings; the case's excluded movies left out)."""
    out = {}
    for name, surface in surfaces_of(bundle.manifest).items():
        matrix = build_case_matrix(bundle, cases, surface.weights)
        out[name] = top_lists(matrix, weight_vector(surface.weights), k)
    return out


@dataclass
class TopnRun:
    """One seed of protocol A: the split, the published models, each test user's case and
    each surface's top-10 (rows in ``users`` order)."""

    seed: int
    train: pd.DataFrame
    test: pd.DataFrame
    models: TrainedModels
    users: list[str]
    cases: list[Case]
    tops: dict[str, np.ndarray]


def topn_run(
    dataset: Dataset,
    params: TrainParams | None = None,
    seed: int = 42,
    stratify: Stratify = "user",
    progress: Progress | None = None,
) -> TopnRun:
    params = params or TrainParams()
    train, test = stratified_split(dataset.interactions, 0.75, stratify, seed)
    train = trainer_rows(train)
    models = publishable_models(dataset, train, params, progress, f"A seed {seed}: ")
    cases, user_idx = holdout_cases(models, test, params.history_cap)
    users = [models.data.users.raw(u) for u in user_idx]
    return TopnRun(seed, train, test, models, users, cases, surface_tops(models.bundle, cases))


def ranking_row(tops: Any, relevant: list[set[int]], models: TrainedModels) -> dict[str, float]:
    """Protocol A's metrics of one ranking (``tops``: each user's ranked movie indexes)."""
    binary = models.data.binary
    pop = np.asarray(binary.sum(axis=0)).ravel() / max(binary.shape[0], 1)
    bundle = models.bundle
    return {
        "precision@10": metrics.precision_at_k(tops, relevant, K),
        "recall@10": metrics.recall_at_k(tops, relevant, K),
        "ndcg@10": metrics.ndcg_at_k(tops, relevant, K),
        "map@10": metrics.map_at_k(tops, relevant, K),
        "coverage@10": metrics.catalog_coverage(tops, bundle.n_items, K),
        "novelty@10": metrics.novelty(tops, pop, K),
        "diversity@10": metrics.intra_list_diversity(tops, bundle.content_vectors, K),
    }


def protocol_topn(
    dataset: Dataset,
    params: TrainParams | None = None,
    seed: int = 42,
    stratify: Stratify = "user",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Protocol A: 75/25 stratified split; each surface of what the trainer would publish
    on the training part, and single components for reference."""
    params = params or TrainParams()
    run = topn_run(dataset, params, seed, stratify, progress)
    relevant = [c.relevant for c in run.cases]
    rows = {name: ranking_row(tops, relevant, run.models) for name, tops in run.tops.items()}
    whole = build_case_matrix(run.models.bundle, run.cases,
                              BlendWeights(session_decay=1.0, session_length=100_000))
    for name, comp in SINGLES.items():
        w = np.array([1.0 if c == comp else 0.0 for c in COMPONENTS])
        rows[name] = ranking_row(top_lists(whole, w, K), relevant, run.models)
    manifest = run.models.bundle.manifest
    return {
        "protocol": "A",
        "seed": seed,
        "stratify": stratify,
        "train_rows": len(run.train),
        "test_rows": len(run.test),
        "users": len(run.cases),
        "history_cap": params.history_cap,
        "default_surface": default_surface(manifest),
        "surfaces": manifest["surfaces"],
        "blend_weights": manifest["blend_weights"],
        "models": rows,
    }
