"""Scoring, blending and ranking with numpy only: the same code serves requests, runs the
offline evaluation and replays the stream.

Components, each a score for every movie in the model:
- ``cf``: the user's ALS vector (folded in from the history) · item factors;
- ``item``: the item-to-item model (EASE neighbours) summed over the whole history;
- ``session``: a second item-to-item model learnt from what people watch in one sitting,
  weighted by the recency of the user's newest interactions;
- ``content``: cosine of the movie's content vector with the user's content profile;
- ``popularity``: the trainer's (optionally time-decayed) popularity;
- ``sequence``: the sequence model (what people rate next after the movies they rated
  last) over the user's newest movies, weighted by recency;
- ``stage``: what people rate at the same stage of their history (popularity among the
  interactions made with about as many earlier ones as the user has now);
- ``peers``: what people who rated the user's newest movies rated around them
  (:mod:`recsys_core.peers`).
Recency counts distinct seconds (:meth:`UserHistory.recency_ranks`). Components whose model
the bundle lacks (older bundles) are left out.
Each component is standardised per request (zero mean, unit variance over the catalogue)
and blended with the weights the trainer fitted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recsys_core.artifacts import STAGE_POPULARITY, ModelBundle
from recsys_core.foldin import fold_in_user
from recsys_core.history import UserHistory
from recsys_core.peers import peer_scores
from recsys_core.sparse import row_positions

F64 = npt.NDArray[np.float64]
COMPONENTS = ("cf", "item", "session", "content", "popularity", "sequence", "stage", "peers")


@dataclass(frozen=True)
class BlendWeights:
    cf: float = 1.0
    item: float = 1.0
    session: float = 1.0
    content: float = 0.1
    popularity: float = 0.1
    sequence: float = 0.0
    stage: float = 0.0
    peers: float = 0.0
    #: recency decay per rank of the session signal, and how many ranks (distinct seconds)
    #: it reads
    session_decay: float = 0.9
    session_length: int = 50
    #: the same for the sequence and the peers signals
    sequence_decay: float = 0.8
    sequence_length: int = 20
    peers_decay: float = 0.5
    peers_length: int = 10

    def component(self, name: str) -> float:
        return float(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlendWeights:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("session_length", "sequence_length", "peers_length"):
            if name in known:
                known[name] = int(known[name])
        return cls(**known)


def neighbor_scores(
    bundle: ModelBundle,
    item_idx: npt.NDArray[np.int64],
    weights: F64,
    model: str = "neighbor",
) -> F64:
    """``Σ_j w_j · B[j, :]`` over the sparse item-to-item rows of the given items."""
    n = bundle.n_items
    mask = weights != 0
    if not mask.any():
        return np.zeros(n)
    rows = item_idx[mask]
    w = weights[mask]
    dense = bundle.dense(model)
    if dense is not None:  # in float32, as the matrix is (no float64 copy of the rows)
        out_dense: F64 = (w.astype(np.float32) @ dense[rows]).astype(np.float64)
        return out_dense
    ptr, indices, scores = bundle.csr(model)
    flat, lengths = row_positions(ptr, rows)
    if flat.size == 0:
        return np.zeros(n)
    vals = scores[flat].astype(np.float64) * np.repeat(w, lengths)
    out: F64 = np.bincount(indices[flat], weights=vals, minlength=n).astype(
        np.float64
    )
    return out


def stage_of(seen: npt.ArrayLike, per_octave: float) -> npt.NDArray[np.int64]:
    """Stage of a history of ``seen`` movies: ``floor(per_octave · log2(seen + 1))``
    (0 for an empty history; stages widen as histories grow)."""
    x = per_octave * np.log2(np.asarray(seen, dtype=np.float64) + 1.0)
    return np.floor(x + 1e-9).astype(np.int64)


def stage_scores(bundle: ModelBundle, history: UserHistory) -> F64 | None:
    """The stage popularity row for this history's length (the last row past the end);
    None when the bundle has no stage popularity."""
    table = bundle.extra.get(STAGE_POPULARITY)
    if table is None:
        return None
    per_octave = float(bundle.params.get("stage_per_octave", 2.0))
    row = min(int(stage_of(len(history), per_octave)), table.shape[0] - 1)
    out: F64 = table[row].astype(np.float64)
    return out


def content_profile(bundle: ModelBundle, history: UserHistory) -> F64:
    """Weighted mean of the content vectors of the movies the user liked."""
    strength = history.confidence - 1.0
    if strength.sum() <= 0:
        strength = np.ones(len(history))
    vecs = bundle.content_vectors[history.item_idx].astype(np.float64)
    profile: F64 = strength @ vecs
    norm = float(np.linalg.norm(profile))
    return profile / norm if norm > 0 else profile


def user_vector(bundle: ModelBundle, history: UserHistory) -> npt.NDArray[np.float32]:
    reg = float(bundle.params.get("als_regularization", 0.1))
    return fold_in_user(
        bundle.item_factors, bundle.yty, history.item_idx, history.confidence, reg
    )


def component_scores(
    bundle: ModelBundle,
    history: UserHistory,
    weights: BlendWeights,
    vector: npt.NDArray[np.float32] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, F64]:
    """Raw scores of every component for every movie; components with weight 0 are skipped.

    ``vector`` is a stored fold-in vector for this model version; without one it is
    computed from the history. ``timings``, when given, receives each component's seconds.
    """
    out: dict[str, F64] = {}
    clock = time.perf_counter

    def timed(name: str, start: float) -> None:
        if timings is not None:
            timings[name] = clock() - start

    if weights.popularity:
        out["popularity"] = bundle.popularity.astype(np.float64)
    if weights.stage:
        stage = stage_scores(bundle, history)
        if stage is not None:
            out["stage"] = stage
    if len(history) == 0:
        return out
    if weights.cf:
        t = clock()
        x = user_vector(bundle, history) if vector is None else vector
        out["cf"] = (bundle.item_factors @ x.astype(np.float32)).astype(np.float64)
        timed("cf", t)
    if weights.item:
        t = clock()
        out["item"] = neighbor_scores(bundle, history.item_idx, np.ones(len(history)))
        timed("item", t)
    if weights.session:
        t = clock()
        w = history.recency_weights(weights.session_decay, weights.session_length)
        out["session"] = neighbor_scores(bundle, history.item_idx, w, "session")
        timed("session", t)
    if weights.sequence and bundle.has_model("sequence"):
        t = clock()
        w = history.recency_weights(weights.sequence_decay, weights.sequence_length)
        out["sequence"] = neighbor_scores(bundle, history.item_idx, w, "sequence")
        timed("sequence", t)
    if weights.peers:
        t = clock()
        peers = peer_scores(bundle, history, weights.peers_decay, weights.peers_length)
        if peers is not None:
            out["peers"] = peers
        timed("peers", t)
    if weights.content:
        t = clock()
        profile = content_profile(bundle, history)
        # float32 product (no per-request copy of the matrix), float64 result
        out["content"] = (bundle.content_vectors @ profile.astype(np.float32)).astype(
            np.float64)
        timed("content", t)
    return out


def standardize(scores: F64) -> F64:
    std = float(scores.std())
    if std == 0.0:
        return np.zeros_like(scores)
    return (scores - float(scores.mean())) / std


def standardized(components: dict[str, F64]) -> dict[str, F64]:
    """Each component standardised (as :func:`standardize`, in one pass for all of them)."""
    if not components:
        return {}
    names = list(components)
    stacked = np.stack([components[n] for n in names]).astype(np.float64, copy=False)
    mean = stacked.mean(axis=1, keepdims=True)
    std = stacked.std(axis=1, keepdims=True)
    flat = std[:, 0] == 0.0
    z = (stacked - mean) / np.where(flat[:, None], 1.0, std)
    z[flat] = 0.0
    return dict(zip(names, z, strict=True))


def weighted(z: dict[str, F64], weights: BlendWeights) -> tuple[F64, dict[str, F64]]:
    """Weighted sum of standardised components; also returns each weighted part."""
    parts = {name: weights.component(name) * s for name, s in z.items()}
    if not parts:
        raise ValueError("nothing to blend")
    total = np.sum(list(parts.values()), axis=0)
    return total, parts


def blend(components: dict[str, F64], weights: BlendWeights) -> tuple[F64, dict[str, F64]]:
    """Weighted sum of standardised components; also returns each weighted part."""
    return weighted(standardized(components), weights)


def blended_scores(
    bundle: ModelBundle,
    history: UserHistory,
    weights: BlendWeights,
    vector: npt.NDArray[np.float32] | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[F64, dict[str, F64], dict[str, F64]]:
    """Every movie's blended score, each component's standardised scores and its weighted
    part; popularity alone when no component applies (a user with no history and no
    popularity weight)."""
    comps = component_scores(bundle, history, weights, vector, timings)
    if not comps:
        comps = {"popularity": bundle.popularity.astype(np.float64)}
        weights = BlendWeights(popularity=1.0)
    z = standardized(comps)
    total, parts = weighted(z, weights)
    return total, z, parts


def exclusions(history: UserHistory, exclude_seen: bool,
               exclude: npt.NDArray[np.int64] | None,
               seen: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.int64] | None:
    """The movies a top-k leaves out: with ``exclude_seen`` every movie the user ever rated
    or watched (the history's, and ``seen``: those beyond the history, which keeps only the
    newest ``cap``), and ``exclude``."""
    drop = [history.item_idx] if exclude_seen else []
    if exclude_seen and seen is not None and seen.size:
        drop.append(np.asarray(seen, dtype=np.int64))
    if exclude is not None:
        drop.append(np.asarray(exclude, dtype=np.int64))
    return np.concatenate(drop) if drop else None


def top_k(
    scores: F64,
    k: int,
    exclude: npt.NDArray[np.int64] | None = None,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int64], F64]:
    """Indexes and scores of the k best movies, best first, skipping excluded ones."""
    s = scores.astype(np.float64, copy=True)
    if exclude is not None and exclude.size:
        s[exclude] = -np.inf
    if allowed is not None:
        s[~allowed] = -np.inf
    finite = int(np.isfinite(s).sum())
    k = min(k, finite)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    kth = s[np.argpartition(-s, k - 1)[k - 1]]
    above = np.flatnonzero(s > kth)
    tied = np.flatnonzero(s == kth)[: k - above.size]  # ties at the cut: lower index first
    part = np.concatenate([above, tied])
    order = np.lexsort((part, -s[part]))
    idx = part[order].astype(np.int64)
    return idx, s[idx]


def recommend(
    bundle: ModelBundle,
    history: UserHistory,
    weights: BlendWeights,
    k: int = 10,
    exclude_seen: bool = True,
    allowed: npt.NDArray[np.bool_] | None = None,
    vector: npt.NDArray[np.float32] | None = None,
    timings: dict[str, float] | None = None,
    exclude: npt.NDArray[np.int64] | None = None,
    seen: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[np.int64], F64, dict[str, F64]]:
    """Top-k for one user: (movie indexes, blended scores, weighted parts per component).
    ``exclude`` drops more movies, besides the seen ones with ``exclude_seen`` (the
    history's and ``seen``, as :func:`exclusions`)."""
    total, _, parts = blended_scores(bundle, history, weights, vector, timings)
    idx, scores = top_k(total, k, exclusions(history, exclude_seen, exclude, seen), allowed)
    return idx, scores, parts
