"""Human-readable reasons: which component put a movie in the list, and why.

The component with the largest weighted, standardised score names the reason:
- ``item`` / ``session``: the watched movie whose neighbour row gives the most weight;
- ``cf``: the liked movie whose ALS factors are closest;
- ``content``: the watched movie most alike in content, and what they share (same director,
  writer, actors, tag or genre);
- ``popularity``: popular now.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recsys_core.artifacts import ModelBundle
from recsys_core.history import UserHistory
from recsys_core.scoring import BlendWeights

F64 = npt.NDArray[np.float64]

#: shared attributes, most telling first, with how a reason names them
SHARED_PHRASES = (
    ("director", "same director as {title}"),
    ("writer", "same writer as {title}"),
    ("actor", "shares actors with {title}"),
    ("tag", "tagged “{value}”, like {title}"),
    ("genre", "{value}, like {title}"),
)


def attributes_of(bundle: ModelBundle, idx: int) -> set[str]:
    ptr = bundle.extra.get("attr_indptr")
    values = bundle.extra.get("attr_values")
    if ptr is None or values is None:
        return set()
    return {str(v) for v in values[int(ptr[idx]) : int(ptr[idx + 1])]}


def _best_neighbor_source(
    bundle: ModelBundle, model: str, sources: npt.NDArray[np.int64], weights: F64, target: int
) -> int | None:
    indptr, indices, scores = bundle.csr(model)
    best, best_val = None, 0.0
    for j, w in zip(sources.tolist(), weights.tolist(), strict=True):
        if w <= 0:
            continue
        s, e = int(indptr[j]), int(indptr[j + 1])
        hit = np.flatnonzero(indices[s:e] == target)
        if hit.size:
            val = float(scores[s + hit[0]]) * w
            if val > best_val:
                best, best_val = j, val
    return best


def _closest(vectors: npt.NDArray[np.floating], sources: npt.NDArray[np.int64], target: int,
             weights: F64 | None = None) -> int | None:
    if sources.size == 0:
        return None
    sims = vectors[sources] @ vectors[target]
    if weights is not None:
        sims = sims * weights
    return int(sources[int(np.argmax(sims))])


def content_reason(bundle: ModelBundle, source: int, target: int) -> str:
    title = str(bundle.titles[source])
    shared = attributes_of(bundle, source) & attributes_of(bundle, target)
    for kind, phrase in SHARED_PHRASES:
        values = sorted(v.split("=", 1)[1] for v in shared if v.startswith(f"{kind}="))
        if values:
            return phrase.format(title=title, value=values[0])
    return f"similar to {title}"


def explain(
    bundle: ModelBundle,
    history: UserHistory,
    weights: BlendWeights,
    parts: dict[str, F64],
    items: npt.NDArray[np.int64],
) -> list[str]:
    """One reason per recommended movie index, from the blend's weighted parts."""
    reasons: list[str] = []
    names = [n for n in parts if n != "popularity" or len(parts) == 1]
    liked = history.item_idx[history.confidence > np.median(history.confidence)] if len(
        history) else history.item_idx
    if liked.size == 0:
        liked = history.item_idx
    for t in items.tolist():
        best = max(names, key=lambda n: parts[n][t]) if names else "popularity"
        reason = "popular now"
        if best in ("item", "session") and len(history):
            w = (np.ones(len(history)) if best == "item"
                 else history.recency_weights(weights.session_decay, weights.session_length))
            src = _best_neighbor_source(
                bundle, "neighbor" if best == "item" else "session", history.item_idx, w, t)
            if src is not None:
                reason = f"because you watched {bundle.titles[src]}"
        elif best == "cf" and len(history):
            src = _closest(bundle.item_factors, liked, t)
            if src is not None:
                reason = f"people who liked {bundle.titles[src]} also liked this"
        elif best == "content" and len(history):
            src = _closest(bundle.content_vectors, history.item_idx, t)
            if src is not None:
                reason = content_reason(bundle, src, t)
        reasons.append(reason)
    return reasons
