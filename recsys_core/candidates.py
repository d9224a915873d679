"""Scoring a candidate set instead of the whole catalogue, for large catalogues.

:func:`recsys_core.scoring.recommend` scores every movie: at 100,000 movies every component
is a pass over the catalogue (two 100,000 × 64 products, five standardisations, a partial
sort), about 16 ms a request. :func:`recommend_candidates` scores only the union of
- the best-scored item-to-item neighbours (``item``, ``session``, ``sequence`` models) of
  the user's movies, and the movies the ``peers`` component votes for most (these
  components are sparse sums already);
- the movies with the best ALS score and the best content score, from a coarse index
  (:class:`CoarseIndex`: the clusters whose upper bound on the score is highest);
- the most popular movies, and the most popular at the user's stage.

Each component's raw score of a candidate is its full-catalogue score, and it is
standardised with the catalogue's mean and deviation, not the candidates': those of the
ALS and content scores are exact from each matrix's column means and covariance
(``mean = m·x``, ``var = xᵀ C x``, precomputed), those of popularity and stage popularity are
precomputed, and those of the sparse components come from their non-zero entries. So a
candidate's blended score is the one full scoring gives it (up to float rounding), and the
top-k differs from full scoring only when one of the full top-k is not a candidate
(measured by ``python -m benchmarks.serving --parts candidates``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recsys_core.artifacts import STAGE_POPULARITY, ModelBundle
from recsys_core.history import UserHistory
from recsys_core.peers import peer_scores
from recsys_core.scoring import (
    BlendWeights,
    content_profile,
    exclusions,
    neighbor_scores,
    stage_of,
    top_k,
    user_vector,
)
from recsys_core.sparse import row_positions

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def _top(scores: npt.NDArray[np.floating], n: int) -> I64:
    """Indexes of the ``n`` largest scores (any order)."""
    if n >= scores.size:
        return np.arange(scores.size, dtype=np.int64)
    return np.argpartition(-scores, n - 1)[:n].astype(np.int64)


@dataclass(frozen=True)
class CoarseIndex:
    """Rows of a matrix grouped in clusters (k-means), for the rows with the largest inner
    product with a query without a pass over every row: clusters are taken in order of an
    upper bound on their best score, ``c·u + r_c ‖u‖`` (centroid ``c``, radius ``r_c``:
    the farthest row from it), until they hold enough rows."""

    centroids: npt.NDArray[np.float32]  # (clusters, dim)
    radius: npt.NDArray[np.float32]  # (clusters,)
    order: I64  # row indexes grouped by cluster
    starts: I64  # (clusters + 1,): cluster c's rows are order[starts[c]:starts[c + 1]]

    @classmethod
    def build(cls, matrix: npt.NDArray[np.floating], clusters: int | None = None,
              iterations: int = 5, sample: int = 20_000, seed: int = 0) -> CoarseIndex:
        x = np.asarray(matrix, dtype=np.float32)
        n = x.shape[0]
        k = max(1, min(n, clusters or int(np.sqrt(n))))
        rng = np.random.default_rng(seed)
        train = x[rng.choice(n, size=min(n, sample), replace=False)]
        centroids = train[rng.choice(train.shape[0], size=k, replace=False)].copy()
        for _ in range(iterations):
            assign, _ = cls._assign(train, centroids)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assign, train)
            counts = np.bincount(assign, minlength=k)
            filled = counts > 0
            centroids[filled] = sums[filled] / counts[filled, None]
        assign, dist_sq = cls._assign(x, centroids)
        order = np.argsort(assign, kind="stable").astype(np.int64)
        starts = np.zeros(k + 1, dtype=np.int64)
        starts[1:] = np.cumsum(np.bincount(assign, minlength=k))
        radius_sq = np.zeros(k, dtype=np.float32)
        np.maximum.at(radius_sq, assign, dist_sq)
        return cls(centroids, np.sqrt(radius_sq), order, starts)

    @staticmethod
    def _assign(x: npt.NDArray[np.float32], centroids: npt.NDArray[np.float32],
                chunk: int = 1024) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Nearest centroid of each row and the squared distance to it, in small chunks (no
        temporary as large as the matrix: the API's resident memory stays flat)."""
        c_sq = (centroids * centroids).sum(axis=1)
        assign = np.empty(x.shape[0], dtype=np.int64)
        dist_sq = np.empty(x.shape[0], dtype=np.float32)
        for s in range(0, x.shape[0], chunk):
            block = x[s : s + chunk]
            d = c_sq[None, :] - 2.0 * (block @ centroids.T)
            a = np.argmin(d, axis=1)
            assign[s : s + chunk] = a
            near = d[np.arange(a.size), a] + (block * block).sum(axis=1)
            dist_sq[s : s + chunk] = np.maximum(near, 0.0)
        return assign, dist_sq

    def top(self, query: npt.NDArray[np.floating], count: int) -> I64:
        """Rows of the clusters with the best bounds, at least ``count`` of them (when the
        matrix has as many)."""
        q = np.asarray(query, dtype=np.float32)
        bound = self.centroids @ q + self.radius * float(np.linalg.norm(q))
        best = np.argsort(-bound, kind="stable")
        sizes = np.diff(self.starts)[best]
        take = int(np.searchsorted(np.cumsum(sizes), count)) + 1
        chosen = best[:take]
        if chosen.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.order[self.starts[c] : self.starts[c + 1]]
                               for c in chosen.tolist()])


@dataclass(frozen=True)
class Moments:
    """Column means and covariance of a matrix ``Y``: the mean and deviation of ``Y x`` over
    its rows for any ``x`` without a pass over the rows."""

    mean: F64
    cov: F64

    @classmethod
    def of(cls, matrix: npt.NDArray[np.floating], chunk: int = 2048) -> Moments:
        x = np.asarray(matrix)
        n, d = x.shape
        total = np.zeros(d)
        gram = np.zeros((d, d))
        for s in range(0, n, chunk):
            block = x[s : s + chunk].astype(np.float64)
            total += block.sum(axis=0)
            gram += block.T @ block
        mean = total / max(n, 1)
        return cls(mean, gram / max(n, 1) - np.outer(mean, mean))

    def of_product(self, x: npt.NDArray[np.floating]) -> tuple[float, float]:
        v = np.asarray(x, dtype=np.float64)
        return float(self.mean @ v), float(np.sqrt(max(float(v @ self.cov @ v), 0.0)))


@dataclass(frozen=True)
class CandidateIndex:
    """What candidate generation precomputes for one model version."""

    popular: I64  # the most popular movies
    stage_popular: list[I64]  # the most popular at each stage (empty without stages)
    cf: CoarseIndex
    content: CoarseIndex
    cf_moments: Moments
    content_moments: Moments
    popularity_moments: tuple[float, float]
    stage_moments: list[tuple[float, float]]
    #: how many of the best movies of the ALS and content scores, and of each sparse
    #: component (item-to-item models, peers), are candidates
    cf_count: int = 1000
    content_count: int = 300
    neighbor_count: int = 500

    @classmethod
    def build(cls, bundle: ModelBundle, popular: int = 500, stage_popular: int = 200,
              cf_count: int = 1000, content_count: int = 300, neighbor_count: int = 500,
              seed: int = 0) -> CandidateIndex:
        table = bundle.extra.get(STAGE_POPULARITY)
        rows = [] if table is None else [np.asarray(row, dtype=np.float64) for row in table]
        pop = np.asarray(bundle.popularity, dtype=np.float64)
        return cls(
            popular=_top(pop, popular),
            stage_popular=[_top(row, stage_popular) for row in rows],
            cf=CoarseIndex.build(bundle.item_factors, seed=seed),
            content=CoarseIndex.build(bundle.content_vectors, seed=seed),
            cf_moments=Moments.of(bundle.item_factors),
            content_moments=Moments.of(bundle.content_vectors),
            popularity_moments=(float(pop.mean()), float(pop.std())),
            stage_moments=[(float(row.mean()), float(row.std())) for row in rows],
            cf_count=cf_count,
            content_count=content_count,
            neighbor_count=neighbor_count,
        )


def _sparse_moments(values: F64, n: int) -> tuple[float, float]:
    """Mean and deviation over ``n`` movies of a score that is ``values`` on some of them
    and zero on the others."""
    mean = float(values.sum()) / max(n, 1)
    return mean, float(np.sqrt(max(float(values @ values) / max(n, 1) - mean * mean, 0.0)))


def sparse_neighbor_scores(
    bundle: ModelBundle, item_idx: I64, weights: F64, model: str = "neighbor"
) -> tuple[I64, F64]:
    """:func:`recsys_core.scoring.neighbor_scores` as (movies with a non-zero score, sorted;
    their scores), without a pass over the catalogue when the model is sparse. The sums
    are the same: each movie's terms are added in the same order."""
    if bundle.dense(model) is not None:
        full = neighbor_scores(bundle, item_idx, weights, model)
        nz = np.flatnonzero(full)
        return nz.astype(np.int64), full[nz]
    mask = weights != 0
    ptr, indices, scores = bundle.csr(model)
    flat, lengths = row_positions(ptr, item_idx[mask])
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    vals = scores[flat].astype(np.float64) * np.repeat(weights[mask], lengths)
    cols = indices[flat]
    ordered = np.sort(cols)
    first = np.ones(ordered.size, dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    items = ordered[first]
    sums = np.bincount(np.searchsorted(items, cols), weights=vals, minlength=items.size)
    keep = sums != 0
    return items[keep].astype(np.int64), sums[keep]


def _values_at(items: I64, values: F64, cand: I64) -> F64:
    """``values`` (of the sorted ``items``) at each candidate, 0 where it has none."""
    out = np.zeros(cand.size)
    if items.size:
        pos = np.minimum(np.searchsorted(items, cand), items.size - 1)
        hit = items[pos] == cand
        out[hit] = values[pos[hit]]
    return out


def candidate_components(
    bundle: ModelBundle,
    index: CandidateIndex,
    history: UserHistory,
    weights: BlendWeights,
    vector: npt.NDArray[np.float32] | None = None,
    skip: I64 | None = None,
) -> tuple[I64, dict[str, F64], dict[str, tuple[float, float]]]:
    """The candidates (sorted movie indexes), each component's raw score over them (the
    value :func:`recsys_core.scoring.component_scores` gives those movies) and each
    component's mean and deviation over the whole catalogue. Movies in ``skip`` (those the
    answer leaves out) do not take the place of others among a component's best."""
    skipped = 0 if skip is None else int(skip.size)
    parts: list[I64] = [index.popular]
    moments: dict[str, tuple[float, float]] = {}
    stage_row: int | None = None
    if weights.stage and index.stage_popular:
        per_octave = float(bundle.params.get("stage_per_octave", 2.0))
        stage_row = min(int(stage_of(len(history), per_octave)), len(index.stage_popular) - 1)
        parts.append(index.stage_popular[stage_row])
        moments["stage"] = index.stage_moments[stage_row]
    if weights.popularity:
        moments["popularity"] = index.popularity_moments
    sparse: dict[str, tuple[I64, F64]] = {}
    x: npt.NDArray[np.float32] | None = None
    profile: F64 | None = None
    if len(history):
        models = [("item", "neighbor", np.ones(len(history)))]
        if weights.session:
            models.append(("session", "session", history.recency_weights(
                weights.session_decay, weights.session_length)))
        if weights.sequence and bundle.has_model("sequence"):
            models.append(("sequence", "sequence", history.recency_weights(
                weights.sequence_decay, weights.sequence_length)))
        for name, model, w in models:
            if weights.component(name):
                sparse[name] = sparse_neighbor_scores(bundle, history.item_idx, w, model)
        if weights.peers:
            peers = peer_scores(bundle, history, weights.peers_decay, weights.peers_length)
            if peers is not None:
                nz = np.flatnonzero(peers).astype(np.int64)
                sparse["peers"] = (nz, peers[nz])
        for name, (nz, vals) in sparse.items():
            moments[name] = _sparse_moments(vals, bundle.n_items)
            if skip is not None and skip.size:
                kept = ~np.isin(nz, skip)
                nz, vals = nz[kept], vals[kept]
            if nz.size > index.neighbor_count:
                nz = nz[np.argpartition(-vals, index.neighbor_count - 1)[
                    : index.neighbor_count]]
            parts.append(nz)
        if weights.cf:
            x = user_vector(bundle, history) if vector is None else vector
            parts.append(index.cf.top(x, index.cf_count + skipped))
            moments["cf"] = index.cf_moments.of_product(x)
        if weights.content:
            profile = content_profile(bundle, history)
            parts.append(index.content.top(profile, index.content_count + skipped))
            moments["content"] = index.content_moments.of_product(profile)
    marked = np.zeros(bundle.n_items, dtype=bool)  # cheaper than a sort of the union
    for part in parts:
        marked[part] = True
    cand = np.flatnonzero(marked).astype(np.int64)
    out: dict[str, F64] = {}
    if weights.popularity:
        out["popularity"] = bundle.popularity[cand].astype(np.float64)
    if stage_row is not None:
        table = bundle.extra[STAGE_POPULARITY]
        out["stage"] = table[stage_row][cand].astype(np.float64)
    if x is not None:
        out["cf"] = (bundle.item_factors[cand] @ x.astype(np.float32)).astype(np.float64)
    for name, (nz, vals) in sparse.items():
        out[name] = _values_at(nz, vals, cand)
    if profile is not None:
        out["content"] = (bundle.content_vectors[cand] @ profile.astype(np.float32)).astype(
            np.float64)
    # the order component_scores() adds them in (the blend sums in this order)
    order = [n for n in ("popularity", "stage", "cf", "item", "session", "sequence", "peers",
                         "content") if n in out]
    return cand, {n: out[n] for n in order}, moments


def standardize_with(scores: F64, mean: float, std: float) -> F64:
    """:func:`recsys_core.scoring.standardize` with a given mean and deviation."""
    if std == 0.0:
        return np.zeros_like(scores)
    return (scores - mean) / std


def recommend_candidates(
    bundle: ModelBundle,
    index: CandidateIndex,
    history: UserHistory,
    weights: BlendWeights,
    k: int = 10,
    exclude_seen: bool = True,
    allowed: npt.NDArray[np.bool_] | None = None,
    vector: npt.NDArray[np.float32] | None = None,
    exclude: npt.NDArray[np.int64] | None = None,
    seen: npt.NDArray[np.int64] | None = None,
) -> tuple[I64, F64, dict[str, F64]] | None:
    """Top-k over the candidates: (movie indexes, blended scores, each component's weighted
    part of each returned movie, aligned with the indexes); None when fewer than ``k``
    candidates pass the filters (the caller then scores the whole catalogue). Exclusions as
    :func:`recsys_core.scoring.exclusions` (``seen``: the movies beyond the history)."""
    skip = exclusions(history, exclude_seen, exclude if exclude is not None and exclude.size
                      else None, seen)
    cand, comps, moments = candidate_components(bundle, index, history, weights, vector, skip)
    if not comps:
        comps = {"popularity": bundle.popularity[cand].astype(np.float64)}
        moments = {"popularity": index.popularity_moments}
        weights = BlendWeights(popularity=1.0)
    parts = {n: weights.component(n) * standardize_with(s, *moments[n])
             for n, s in comps.items()}
    total = np.sum(list(parts.values()), axis=0)
    keep = np.ones(cand.size, dtype=bool) if allowed is None else allowed[cand].copy()
    if skip is not None:
        keep &= ~np.isin(cand, skip)
    if int(keep.sum()) < k:
        return None
    pos, scores = top_k(total, k, allowed=keep)
    return cand[pos], scores, {n: p[pos] for n, p in parts.items()}
