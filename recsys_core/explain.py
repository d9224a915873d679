"""Human-readable reasons: which component put a movie in the list, and why.

The component with the largest weighted, standardised score names the reason:
- ``item`` / ``session``: the watched movie whose neighbour row gives the most weight;
- ``sequence``: the same over the newest movies ("because you just watched ...");
- ``peers``: the newest movie around which people who watched it watched this one;
- ``stage``: popular with people at the user's stage (new members, or as many movies);
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
from recsys_core.names import is_opaque_id
from recsys_core.peers import peer_sources
from recsys_core.scoring import BlendWeights
from recsys_core.sparse import row_positions

F64 = npt.NDArray[np.float64]

#: shared attributes, most telling first, with how a reason names them
SHARED_PHRASES = (
    ("director", "same director as {title}"),
    ("writer", "same writer as {title}"),
    ("actor", "shares actors with {title}"),
    ("tag", "tagged “{value}”, like {title}"),
    ("genre", "{value}, like {title}"),
)
#: the same for people known by name (an opaque id is never shown as a name)
NAMED_PHRASES = {
    "director": "directed by {value}, like {title}",
    "writer": "written by {value}, like {title}",
    "actor": "with {value}, like {title}",
}


def attributes_of(bundle: ModelBundle, idx: int) -> set[str]:
    ptr = bundle.extra.get("attr_indptr")
    values = bundle.extra.get("attr_values")
    if ptr is None or values is None:
        return set()
    return {str(v) for v in values[int(ptr[idx]) : int(ptr[idx + 1])]}


def _best_neighbor_sources(
    bundle: ModelBundle, model: str, sources: npt.NDArray[np.int64], weights: F64,
    targets: list[int],
) -> dict[int, int]:
    """For each target, the source whose weighted neighbour score for it is largest (targets
    no positively weighted source points to are left out). One pass over the sources' rows."""
    keep = weights > 0
    if not keep.any() or not targets:
        return {}
    rows, w = sources[keep], weights[keep]
    dense = bundle.dense(model)
    if dense is not None:
        tcols = np.asarray(targets, dtype=np.int64)
        vals = dense[np.ix_(rows, tcols)].astype(np.float64) * w[:, None]
        best_rows = np.argmax(vals, axis=0)  # first (earliest source) among ties
        return {int(t): int(rows[b]) for t, b, v in
                zip(tcols, best_rows, vals[best_rows, np.arange(tcols.size)], strict=True)
                if v > 0}
    indptr, indices, scores = bundle.csr(model)
    flat, lengths = row_positions(indptr, rows)
    cols = indices[flat]
    hit = np.isin(cols, np.asarray(targets, dtype=cols.dtype))
    if not hit.any():
        return {}
    src = np.repeat(rows, lengths)[hit]
    val = scores[flat][hit].astype(np.float64) * np.repeat(w, lengths)[hit]
    tgt = cols[hit]
    order = np.lexsort((-val, tgt))  # by target, best value first
    first = np.ones(order.size, dtype=bool)
    first[1:] = tgt[order][1:] != tgt[order][:-1]
    best = order[first]
    return {int(t): int(j) for t, j, v in zip(tgt[best], src[best], val[best], strict=True)
            if v > 0}


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
            names = [v for v in values if not is_opaque_id(v)]
            if names and kind in NAMED_PHRASES:
                return NAMED_PHRASES[kind].format(title=title, value=names[0])
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
    return explain_items(bundle, history, weights, {n: p[items] for n, p in parts.items()},
                         items)


def explain_items(
    bundle: ModelBundle,
    history: UserHistory,
    weights: BlendWeights,
    item_parts: dict[str, F64],
    items: npt.NDArray[np.int64],
) -> list[str]:
    """:func:`explain` from the weighted parts of the recommended movies only (aligned with
    ``items``), as candidate scoring gives them."""
    reasons: list[str] = []
    names = [n for n in item_parts if n != "popularity" or len(item_parts) == 1]
    liked = history.item_idx[history.confidence > np.median(history.confidence)] if len(
        history) else history.item_idx
    if liked.size == 0:
        liked = history.item_idx
    targets = items.tolist()
    winners = {t: max(names, key=lambda n: item_parts[n][j]) if names else "popularity"
               for j, t in enumerate(targets)}
    sources: dict[str, dict[int, int]] = {}
    recency = {
        "item": (1.0, len(history) + 1),
        "session": (weights.session_decay, weights.session_length),
        "sequence": (weights.sequence_decay, weights.sequence_length),
    }
    for model, comp in (("neighbor", "item"), ("session", "session"), ("sequence", "sequence")):
        wanted = [t for t in targets if winners[t] == comp]
        if wanted and len(history):
            w = history.recency_weights(*recency[comp])
            sources[comp] = _best_neighbor_sources(bundle, model, history.item_idx, w, wanted)
    wanted = [t for t in targets if winners[t] == "peers"]
    if wanted:
        sources["peers"] = peer_sources(bundle, history, weights.peers_decay,
                                        weights.peers_length, wanted)
    for t in targets:
        best = winners[t]
        reason = "popular now"
        if best in ("item", "session", "sequence") and len(history):
            src = sources.get(best, {}).get(t)
            if src is not None:
                just = " just" if best == "sequence" else ""
                reason = f"because you{just} watched {bundle.titles[src]}"
        elif best == "peers":
            src = sources.get(best, {}).get(t)
            if src is not None:
                reason = (f"people who watched {bundle.titles[src]} watched this around "
                          "the same time")
        elif best == "stage":
            reason = ("popular with new members" if len(history) == 0 else
                      "popular with people who have watched as many movies as you")
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
