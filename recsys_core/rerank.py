"""The second stage: gradient-boosted trees reorder the blend's best candidates.

The linear blend (:mod:`recsys_core.scoring`) weighs each component the same for every user
and movie. What it cannot express is *when* a component is right: the sequence signal
while a user is rating a page of movies in one second, popularity for a movie that is
being discovered this week, the neighbours of the last movie when the candidate is from
the same years. The reranker sees, for each of the blend's top :data:`CANDIDATES` movies,
the components' standardised scores, the blend's score and rank, the user's history
(length, gap since their last event, the current sitting, ratings), and the movie's
activity (:mod:`recsys_core.activity`: how long it has been known, events in the last day
and week) and closeness to the user's newest movies; it returns a score per candidate.

The trees are trained by the trainer on the features it logged for recent events and the
movie each user actually chose next (``training/rerank.py``), and travel in the model bundle
as plain arrays (:data:`TREE_ARRAYS`), evaluated here with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from recsys_core.activity import MovieActivity
from recsys_core.artifacts import RERANK_NODE_ARRAYS, ModelBundle
from recsys_core.history import UserHistory
from recsys_core.scoring import COMPONENTS

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
#: how many of the blend's best movies are reordered
CANDIDATES = 50
FEATURES: tuple[str, ...] = (
    *(f"z_{c}" for c in COMPONENTS),
    "blend", "blend_rank",
    "log_history", "log_gap", "same_second", "sitting", "last_rating", "mean_rating",
    "year", "years_old", "log_days_known", "log_day_count", "log_week_count",
    "index_distance", "year_distance", "genre_overlap",
)
#: bundle ``extra`` arrays of the trees: one row per node of every tree, roots by tree
TREE_ARRAYS = (*RERANK_NODE_ARRAYS, "rerank_roots")
SITTING_SECONDS = 60.0


@dataclass(frozen=True)
class Trees:
    """A boosted tree ensemble as flat node arrays (children are global node indexes; a leaf
    points to itself). ``score(X) = base + Σ_trees value[leaf reached by X]``."""

    feature: npt.NDArray[np.int32]
    threshold: F64
    left: npt.NDArray[np.int32]
    right: npt.NDArray[np.int32]
    value: F64
    missing_left: npt.NDArray[np.bool_]
    roots: npt.NDArray[np.int32]
    base: float
    depth: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "_leaf", self.left == np.arange(self.left.size))
        object.__setattr__(self, "_tables", _LeafTables.build(self))

    def score(self, x: F32 | F64) -> F64:
        """Raw scores (log-odds) of the rows of ``x``: from the leaf tables when the trees
        have them (:class:`_LeafTables`), else by walking the trees."""
        x = np.asarray(x, dtype=np.float64)
        tables: _LeafTables | None = self._tables  # type: ignore[attr-defined]
        if tables is not None and x.ndim == 2 and x.shape[1] > tables.max_feature:
            return tables.score(x) + self.base
        return self.walk(x)

    def walk(self, x: F64) -> F64:
        """Walks all (row, tree) pairs a level at a time, keeping only those not yet at a
        leaf; at most ``depth`` levels, so even arrays with a cycle cannot hang a request."""
        n, f = x.shape
        t = self.roots.size
        flat = x.ravel()
        node = np.tile(self.roots, n)
        offset = np.repeat(np.arange(n) * f, t)
        leaf: npt.NDArray[np.bool_] = self._leaf  # type: ignore[attr-defined]
        active = np.flatnonzero(~leaf[node])
        for _ in range(self.depth if self.depth > 0 else self.left.size):
            if not active.size:
                break
            nd = node[active]
            v = flat[offset[active] + self.feature[nd]]
            go_left = v <= self.threshold[nd]
            nan = np.isnan(v)
            if nan.any():
                go_left = np.where(nan, self.missing_left[nd], go_left)
            nd = np.where(go_left, self.left[nd], self.right[nd])
            node[active] = nd
            active = active[~leaf[nd]]
        out: F64 = self.value[node].reshape(n, t).sum(axis=1) + self.base
        return out

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {
            "rerank_feature": self.feature, "rerank_threshold": self.threshold,
            "rerank_left": self.left, "rerank_right": self.right, "rerank_value": self.value,
            "rerank_missing_left": self.missing_left, "rerank_roots": self.roots,
        }

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> Trees | None:
        """The bundle's trees, or None when it has none (or they are for other features)."""
        x = bundle.extra
        if not all(name in x for name in TREE_ARRAYS):
            return None
        params = bundle.params
        if list(params.get("rerank_features", [])) != list(FEATURES):
            return None
        return cls(
            feature=x["rerank_feature"].astype(np.int32),
            threshold=x["rerank_threshold"].astype(np.float64),
            left=x["rerank_left"].astype(np.int32),
            right=x["rerank_right"].astype(np.int32),
            value=x["rerank_value"].astype(np.float64),
            missing_left=x["rerank_missing_left"].astype(bool),
            roots=x["rerank_roots"].astype(np.int32),
            base=float(params.get("rerank_base", 0.0)),
            depth=int(params.get("rerank_depth", 0)),
        )


@dataclass(frozen=True)
class _LeafTables:
    """The trees as bit tables, scored without walking them (the QuickScorer idea, Lucchese
    et al., SIGIR 2015, vectorised over rows).

    A tree's leaves are numbered left to right. A node whose test fails (``x > threshold``,
    or a missing value that goes right) rules out the leaves of its left subtree, and the
    leaf a row reaches is the leftmost one no failing node rules out. The nodes testing one
    feature, sorted by threshold, fail for a row exactly up to where its value sorts in, so
    for each feature and each such position the table holds, per tree, the leaves still
    possible (one ``uint64`` per tree, the AND of the failing nodes' masks); a last row per
    feature is for a missing value. Scoring is one ``searchsorted`` per feature, a gather,
    an AND over the features and the lowest set bit: the same handful of numpy calls
    whatever the trees' depth, where a walk makes a dozen per level."""

    columns: npt.NDArray[np.int64]  # the features the trees test
    #: every tested (feature, threshold) as ``feature + threshold·i``, sorted (complex
    #: numbers sort by real part, then imaginary part: one searchsorted for all features)
    keys: npt.NDArray[np.complex128]
    shift: npt.NDArray[np.int64]  # per column: table row = key position + shift
    missing_rows: npt.NDArray[np.int64]  # per column: the table row of a missing value
    table: npt.NDArray[np.uint64]  # (rows, trees)
    leaf_value: F64  # (trees × 64) flat, leaf values by tree and position
    max_feature: int
    offsets: npt.NDArray[np.int64]  # where each tree's leaves start in ``leaf_value``

    @classmethod
    def build(cls, trees: Trees) -> _LeafTables | None:
        """None when the arrays are not plain trees of at most 64 leaves each (the walk
        then scores them)."""
        left, right, leaf = trees.left, trees.right, trees._leaf  # type: ignore[attr-defined]
        n_nodes, n_trees = left.size, trees.roots.size
        if n_trees == 0 or n_nodes == 0:
            return None
        tree_of = np.full(n_nodes, -1, dtype=np.int64)
        mask = np.zeros(n_nodes, dtype=np.uint64)
        leaf_value = np.zeros((n_trees, 64))
        full = (1 << 64) - 1
        lefts, rights, leaves = left.tolist(), right.tolist(), leaf.tolist()
        for t, root in enumerate(trees.roots.tolist()):
            count = 0
            stack: list[tuple[int, int]] = [(int(root), -1)]  # (node, -1) or (node, start)
            while stack:
                node, start = stack.pop()
                if not 0 <= node < n_nodes:
                    return None
                if start >= 0:  # back from the left subtree: leaves [start, count)
                    mask[node] = full ^ (((1 << count) - 1) ^ ((1 << start) - 1))
                    continue
                if tree_of[node] != -1 or count >= 64:  # shared node, cycle, too wide
                    return None
                tree_of[node] = t
                if leaves[node]:
                    leaf_value[t, count] = trees.value[node]
                    count += 1
                    continue
                stack += [(rights[node], -1), (node, count), (lefts[node], -1)]
        internal = np.flatnonzero((tree_of >= 0) & ~leaf)
        feature = trees.feature[internal].astype(np.int64)
        if not internal.size or feature.min() < 0 or np.isnan(trees.threshold[internal]).any():
            return None
        columns, keys, shift, missing_rows, blocks = [], [], [], [], []
        all_leaves = np.full(n_trees, full, dtype=np.uint64)
        first = position = 0
        for f in np.unique(feature).tolist():
            nodes = internal[feature == f]
            nodes = nodes[np.argsort(trees.threshold[nodes], kind="stable")]
            steps = np.tile(all_leaves, (nodes.size + 1, 1))
            steps[np.arange(1, nodes.size + 1), tree_of[nodes]] = mask[nodes]
            missing = all_leaves.copy()
            right_nodes = nodes[~trees.missing_left[nodes]]
            np.bitwise_and.at(missing, tree_of[right_nodes], mask[right_nodes])
            blocks += [np.bitwise_and.accumulate(steps, axis=0), missing[None, :]]
            key = np.empty(nodes.size, dtype=np.complex128)
            key.real, key.imag = f, trees.threshold[nodes]
            columns.append(f)
            keys.append(key)
            shift.append(first - position)
            missing_rows.append(first + nodes.size + 1)
            first += nodes.size + 2
            position += nodes.size
        return cls(np.asarray(columns, dtype=np.int64), np.concatenate(keys),
                   np.asarray(shift, dtype=np.int64), np.asarray(missing_rows, dtype=np.int64),
                   np.concatenate(blocks), leaf_value.ravel(), int(feature.max()),
                   np.arange(0, 64 * n_trees, 64, dtype=np.int64))

    def score(self, x: F64) -> F64:
        """Σ over the trees of the leaf values ``x``'s rows reach (without the base)."""
        values = x[:, self.columns]
        key = np.empty(values.shape, dtype=np.complex128)
        key.real, key.imag = self.columns, values
        rows = np.searchsorted(self.keys, key) + self.shift
        missing = np.isnan(values)
        if missing.any():
            rows = np.where(missing, self.missing_rows, rows)
        alive = np.bitwise_and.reduce(self.table[rows], axis=1)  # (n, trees)
        lowest = alive & (~alive + np.uint64(1))
        position = np.log2(lowest.astype(np.float64)).astype(np.int64)
        out: F64 = self.leaf_value[position + self.offsets].sum(axis=1)
        return out


class GenreMatrix:
    """Movie × genre 0/1 matrix of a bundle, built once per bundle."""

    _cache: dict[int, tuple[ModelBundle, F32]] = {}

    @classmethod
    def of(cls, bundle: ModelBundle) -> F32:
        hit = cls._cache.get(id(bundle))
        if hit is not None and hit[0] is bundle:
            return hit[1]
        names = sorted({g for s in bundle.genres.tolist() for g in str(s).split("|") if g})
        col = {g: j for j, g in enumerate(names)}
        out = np.zeros((bundle.n_items, max(1, len(names))), dtype=np.float32)
        for i, s in enumerate(bundle.genres.tolist()):
            for g in str(s).split("|"):
                if g:
                    out[i, col[g]] = 1.0
        cls._cache = {id(bundle): (bundle, out)}
        return out


def features(
    bundle: ModelBundle,
    z: dict[str, F64],
    blended: F64,
    cand: npt.NDArray[np.int64],
    history: UserHistory,
    activity: MovieActivity,
) -> F32:
    """One row of :data:`FEATURES` per candidate (movie indexes ``cand``, best first by
    ``blended``). ``z`` are the components' standardised scores
    (:func:`recsys_core.scoring.standardized`)."""
    n = cand.size
    out = np.zeros((n, len(FEATURES)), dtype=np.float32)
    nc = len(COMPONENTS)
    for j, name in enumerate(COMPONENTS):
        s = z.get(name)
        if s is not None:
            out[:, j] = s[cand]
    out[:, nc] = blended[cand]
    out[:, nc + 1] = np.arange(n)
    now = activity.now
    years = bundle.years[cand].astype(np.float64)
    known = years > 0
    years = np.where(known, years, np.nan)
    size = len(history)
    out[:, nc + 2] = np.log1p(size)
    if size:
        ts = history.timestamps
        last = float(ts[-1])
        # the clock is never behind the user's own newest event (a live API may not have
        # read it from the event log yet)
        now = max(now, last)
        gap = now - last
        out[:, nc + 3] = np.log1p(gap)
        out[:, nc + 4] = float(gap == 0.0)
        out[:, nc + 5] = float((ts >= last - SITTING_SECONDS).sum())
        r = history.ratings
        rated = np.isfinite(r)
        out[:, nc + 6] = r[-1] if rated[-1] else 0.0
        out[:, nc + 7] = float(r[rated].mean()) if rated.any() else 0.0
        newest = history.item_idx[-5:]
        out[:, nc + 13] = np.abs(cand[:, None] - newest[None, :]).min(axis=1)
        last_year = float(bundle.years[newest[-1]])
        out[:, nc + 14] = np.abs(years - last_year) if last_year > 0 else np.nan
        genres = GenreMatrix.of(bundle)
        recent = genres[newest].sum(axis=0)
        out[:, nc + 15] = (genres[cand] @ recent) / max(float(recent.sum()), 1.0)
    else:
        out[:, nc + 3] = -1.0
        out[:, nc + 13] = bundle.n_items
        out[:, nc + 14] = np.nan
    out[:, nc + 8] = years
    this_year = datetime.fromtimestamp(now, UTC).year if np.isfinite(now) else np.nan
    out[:, nc + 9] = this_year - years
    days, day, week = activity.features(activity.positions(bundle.movies)[cand])
    out[:, nc + 10] = np.where(np.isnan(days), -1.0, np.log1p(np.maximum(days, 0.0)))
    out[:, nc + 11] = np.log1p(day)
    out[:, nc + 12] = np.log1p(week)
    return out


def rerank(
    trees: Trees,
    bundle: ModelBundle,
    z: dict[str, F64],
    blended: F64,
    cand: npt.NDArray[np.int64],
    history: UserHistory,
    activity: MovieActivity,
    x: F32 | None = None,
) -> tuple[npt.NDArray[np.int64], F64]:
    """The first :data:`CANDIDATES` of ``cand`` reordered by the trees (ties keep the blend's
    order), the rest after them; returns (movie indexes, scores), scores non-increasing.
    ``x``: the head's :func:`features` when already computed."""
    head = cand[:CANDIDATES]
    if x is None:
        x = features(bundle, z, blended, head, history, activity)
    s = trees.score(x)
    order = np.argsort(-s, kind="stable")
    idx = np.concatenate([head[order], cand[CANDIDATES:]])
    tail = np.full(cand.size - head.size, float(s.min()) if s.size else 0.0)
    return idx, np.concatenate([s[order], tail])
