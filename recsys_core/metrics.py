"""Offline quality metrics with the definitions of the Microsoft Recommenders benchmark.

Ranking metrics take, per user, the ranked list of recommended movie indexes and the set of
relevant ones; relevance is binary. Every function returns the mean over users who have at
least one relevant item.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import numpy.typing as npt

Ranked = Sequence[int] | npt.NDArray[np.integer]


def _discounts(k: int) -> npt.NDArray[np.float64]:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _hits(ranked: Ranked, relevant: Collection[int], k: int) -> npt.NDArray[np.bool_]:
    top = list(ranked)[:k]
    return np.fromiter((int(i) in relevant for i in top), dtype=bool, count=len(top))


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def precision_at_k(recs: Sequence[Ranked], relevant: Sequence[Collection[int]], k: int) -> float:
    """Hits in the top k divided by k."""
    return _mean([_hits(r, rel, k).sum() / k for r, rel in zip(recs, relevant, strict=True) if rel])


def recall_at_k(recs: Sequence[Ranked], relevant: Sequence[Collection[int]], k: int) -> float:
    """Hits in the top k divided by the number of relevant items."""
    return _mean(
        [_hits(r, rel, k).sum() / len(rel) for r, rel in zip(recs, relevant, strict=True) if rel]
    )


def ndcg_at_k(recs: Sequence[Ranked], relevant: Sequence[Collection[int]], k: int) -> float:
    """Normalised DCG with binary relevance; the ideal list puts min(|rel|, k) hits first."""
    disc = _discounts(k)
    out: list[float] = []
    for r, rel in zip(recs, relevant, strict=True):
        if not rel:
            continue
        h = _hits(r, rel, k)
        dcg = float(disc[: h.size][h].sum())
        idcg = float(disc[: min(len(rel), k)].sum())
        out.append(dcg / idcg)
    return _mean(out)


def map_at_k(recs: Sequence[Ranked], relevant: Sequence[Collection[int]], k: int) -> float:
    """Mean average precision, each user's sum of precisions at hits divided by |relevant|."""
    out: list[float] = []
    for r, rel in zip(recs, relevant, strict=True):
        if not rel:
            continue
        h = _hits(r, rel, k)
        ranks = np.flatnonzero(h) + 1
        precisions = np.arange(1, ranks.size + 1) / ranks
        out.append(float(precisions.sum()) / len(rel))
    return _mean(out)


def hit_rate_at_k(recs: Sequence[Ranked], targets: Sequence[int], k: int) -> float:
    """Share of cases whose single target movie is in the top k."""
    return _mean([float(int(t) in list(r)[:k]) for r, t in zip(recs, targets, strict=True)])


def mrr_at_k(recs: Sequence[Ranked], targets: Sequence[int], k: int) -> float:
    """Mean reciprocal rank of the single target within the top k (0 when absent)."""
    out: list[float] = []
    for r, t in zip(recs, targets, strict=True):
        top = [int(i) for i in list(r)[:k]]
        out.append(1.0 / (top.index(int(t)) + 1) if int(t) in top else 0.0)
    return _mean(out)


def rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.size == 0:
        raise ValueError("rmse needs two non-empty arrays of the same shape")
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.size == 0:
        raise ValueError("mae needs two non-empty arrays of the same shape")
    return float(np.mean(np.abs(t - p)))


def catalog_coverage(recs: Sequence[Ranked], n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    shown: set[int] = set()
    for r in recs:
        shown.update(int(i) for i in list(r)[:k])
    return len(shown) / n_items if n_items else 0.0


def novelty(recs: Sequence[Ranked], item_popularity: npt.ArrayLike, k: int) -> float:
    """Mean self-information ``-log2 p(i)`` of recommended items, p = share of users."""
    p = np.asarray(item_popularity, dtype=np.float64)
    vals = [-np.log2(max(p[int(i)], 1e-12)) for r in recs for i in list(r)[:k]]
    return _mean([float(v) for v in vals])


def intra_list_diversity(
    recs: Sequence[Ranked], item_vectors: npt.NDArray[np.floating], k: int
) -> float:
    """Mean pairwise cosine distance between the items of each top-k list."""
    v = np.asarray(item_vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    unit = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    out: list[float] = []
    for r in recs:
        idx = np.asarray(list(r)[:k], dtype=np.int64)
        if idx.size < 2:
            continue
        sims = unit[idx] @ unit[idx].T
        n = idx.size
        off_diagonal = sims.sum() - np.trace(sims)
        out.append(float((n * (n - 1) - off_diagonal) / (n * (n - 1))))
    return _mean(out)
