"""Fit the hybrid's blend weights on validation cases by coordinate ascent on NDCG@10.

Component scores of every case are computed once and standardised; each candidate weight
vector is then a single matrix product, so hundreds of candidates take seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from recsys_core.artifacts import ModelBundle
from recsys_core.history import UserHistory
from recsys_core.scoring import COMPONENTS, BlendWeights, component_scores, standardize

GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass
class Case:
    history: UserHistory
    relevant: set[int]


@dataclass
class CaseMatrix:
    z: npt.NDArray[np.float32]  # (cases, components, items), standardised
    seen: list[npt.NDArray[np.int64]]
    relevant: list[set[int]]


def build_case_matrix(
    bundle: ModelBundle, cases: Sequence[Case], session: BlendWeights
) -> CaseMatrix:
    all_on = replace(session, cf=1.0, item=1.0, session=1.0, content=1.0, popularity=1.0)
    z = np.zeros((len(cases), len(COMPONENTS), bundle.n_items), dtype=np.float32)
    for c, case in enumerate(cases):
        comps = component_scores(bundle, case.history, all_on)
        for j, name in enumerate(COMPONENTS):
            if name in comps:
                z[c, j] = standardize(comps[name])
    return CaseMatrix(z, [c.history.item_idx for c in cases], [c.relevant for c in cases])


def top_lists(matrix: CaseMatrix, w: npt.NDArray[np.float64], k: int = 10) -> npt.NDArray[np.int64]:
    """Each case's top k movie indexes (seen movies excluded) under weights ``w``."""
    scores = np.einsum("cji,j->ci", matrix.z, w.astype(np.float32))
    for c, seen in enumerate(matrix.seen):
        scores[c, seen] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1).astype(np.int64)


def weight_vector(weights: BlendWeights) -> npt.NDArray[np.float64]:
    return np.array([weights.component(n) for n in COMPONENTS], dtype=np.float64)


def ndcg_of(matrix: CaseMatrix, w: npt.NDArray[np.float64], k: int = 10) -> float:
    top = top_lists(matrix, w, k)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    total = 0.0
    for c, rel in enumerate(matrix.relevant):
        hits = np.fromiter((int(i) in rel for i in top[c]), bool, k)
        total += float(disc[hits].sum() / disc[: min(len(rel), k)].sum())
    return total / max(len(matrix.relevant), 1)


#: (recency decay per rank, interactions read) tried for the session component
DECAYS = ((1.0, 100_000), (0.97, 200), (0.9, 50), (0.8, 20))


def fit_blend_weights(
    groups: Sequence[tuple[ModelBundle, Sequence[Case]]],
    session: BlendWeights | None = None,
    passes: int = 3,
    decays: Sequence[tuple[float, int]] = DECAYS,
) -> tuple[BlendWeights, float]:
    """Best weights (and session recency) by mean validation NDCG@10 over the groups, each a
    model trained on one validation split with the cases held out from it."""
    session = session or BlendWeights()
    best: tuple[BlendWeights, float] | None = None
    for decay, length in decays:
        trial = replace(session, session_decay=decay, session_length=length)
        matrices = [
            build_case_matrix(bundle, [c for c in cases if c.relevant], trial)
            for bundle, cases in groups
        ]
        found = _coordinate_ascent(matrices, trial, passes)
        if best is None or found[1] > best[1] + 1e-6:
            best = found
    if best is None:
        raise ValueError("no decay to try")
    return best


def _mean_ndcg(matrices: Sequence[CaseMatrix], w: npt.NDArray[np.float64]) -> float:
    return float(np.mean([ndcg_of(m, w) for m in matrices]))


def _coordinate_ascent(
    matrices: Sequence[CaseMatrix], session: BlendWeights, passes: int
) -> tuple[BlendWeights, float]:
    n = len(COMPONENTS)
    singles = [_mean_ndcg(matrices, np.eye(n)[j]) for j in range(n)]
    best_w = np.eye(n)[int(np.argmax(singles))]
    best = max(singles)
    for _ in range(passes):
        improved = False
        for j in range(n):
            for value in GRID:
                if value == best_w[j]:
                    continue
                w = best_w.copy()
                w[j] = value
                if not w.any():
                    continue
                score = _mean_ndcg(matrices, w)
                if score > best + 1e-6:
                    best, best_w, improved = score, w, True
        if not improved:
            break
    fitted = replace(session, **{name: float(best_w[j]) for j, name in enumerate(COMPONENTS)})
    return fitted, best
