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
    """A validation case: the history scored, the movies that count as hits, and the
    movies excluded from its top-k (the history's own when None; all the user ever saw
    when the scored history is capped)."""

    history: UserHistory
    relevant: set[int]
    seen: npt.NDArray[np.int64] | None = None

    @property
    def excluded(self) -> npt.NDArray[np.int64]:
        return self.history.item_idx if self.seen is None else self.seen


@dataclass
class CaseMatrix:
    z: npt.NDArray[np.float32]  # (cases, components, items), standardised
    seen: list[npt.NDArray[np.int64]]
    relevant: list[set[int]]


def build_case_matrix(
    bundle: ModelBundle,
    cases: Sequence[Case],
    session: BlendWeights,
    base: CaseMatrix | None = None,
) -> CaseMatrix:
    """Standardised component scores of every case; with ``base`` (the same cases), only the
    session component is recomputed, since it alone depends on the recency settings."""
    if base is not None:
        z = base.z.copy()
        only = replace(session, **{n: float(n == "session") for n in COMPONENTS})
    else:
        z = np.zeros((len(cases), len(COMPONENTS), bundle.n_items), dtype=np.float32)
        only = replace(session, **dict.fromkeys(COMPONENTS, 1.0))
    for c, case in enumerate(cases):
        comps = component_scores(bundle, case.history, only)
        for j, name in enumerate(COMPONENTS):
            if name in comps:
                z[c, j] = standardize(comps[name])
    return CaseMatrix(z, [c.excluded for c in cases], [c.relevant for c in cases])


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


@dataclass
class Candidates:
    """Each case cut down to the union of every component's top ``depth`` unseen movies:
    the blended top 10 lies there for any non-negative weights in practice, and scoring
    a few hundred columns instead of the catalogue makes a weight trial cheap."""

    z: npt.NDArray[np.float32]  # (cases, components, width), -inf padding
    relevant: npt.NDArray[np.bool_]  # (cases, width)
    ideal: npt.NDArray[np.float64]  # (cases,) ideal DCG@10


def candidates_of(matrix: CaseMatrix, depth: int = 100, k: int = 10) -> Candidates:
    n_cases, n_comp, n_items = matrix.z.shape
    depth = min(depth, n_items - 1)
    cols: list[npt.NDArray[np.int64]] = []
    for c in range(n_cases):
        zc = matrix.z[c].copy()
        zc[:, matrix.seen[c]] = -np.inf
        top = np.argpartition(-zc, depth - 1, axis=1)[:, :depth]
        cols.append(np.unique(top))
    width = max(len(x) for x in cols) if cols else 1
    z = np.full((n_cases, n_comp, width), -np.inf, dtype=np.float32)
    rel = np.zeros((n_cases, width), dtype=bool)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.zeros(n_cases)
    for c, col in enumerate(cols):
        z[c, :, : col.size] = matrix.z[c][:, col]
        rel[c, : col.size] = np.isin(col, list(matrix.relevant[c]))
        ideal[c] = disc[: min(len(matrix.relevant[c]), k)].sum()
    return Candidates(z, rel, ideal)


def ndcg_of(cands: Candidates, w: npt.NDArray[np.float64], k: int = 10) -> float:
    scores = np.einsum("cji,j->ci", np.nan_to_num(cands.z, neginf=-1e30), w.astype(np.float32))
    scores[np.isneginf(cands.z[:, 0, :])] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, 1)
    hits = np.take_along_axis(cands.relevant, top, 1)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    return float(np.mean((hits * disc).sum(axis=1) / cands.ideal))


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
    kept = [[c for c in cases if c.relevant] for _, cases in groups]
    bases: list[CaseMatrix] = []
    for decay, length in decays:
        trial = replace(session, session_decay=decay, session_length=length)
        matrices = [
            build_case_matrix(bundle, cs, trial, bases[g] if bases else None)
            for g, ((bundle, _), cs) in enumerate(zip(groups, kept, strict=True))
        ]
        if not bases:
            bases = matrices
        pruned = [candidates_of(m) for m in matrices]
        found = _coordinate_ascent(pruned, trial, passes)
        if best is None or found[1] > best[1] + 1e-6:
            best = found
    if best is None:
        raise ValueError("no decay to try")
    return best


def _mean_ndcg(matrices: Sequence[Candidates], w: npt.NDArray[np.float64]) -> float:
    return float(np.mean([ndcg_of(m, w) for m in matrices]))


def _coordinate_ascent(
    matrices: Sequence[Candidates], session: BlendWeights, passes: int
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
