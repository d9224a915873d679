"""Human-readable reasons: which component put a movie in the list, and why.

The component with the largest weighted, standardised score names the reason:
- ``item`` / ``session``: the watched movie whose neighbour row gives the most weight;
- ``sequence``: the same over the newest movies ("because you just watched ...");
- ``peers``: the newest movie around which people who watched it watched this one ("fans of
  ... also watched this");
- ``stage``: popular with people at the user's stage (new members, or as many movies);
- ``cf``: the liked movie whose ALS factors are closest;
- ``content``: the watched movie most alike in content, and the strongest trait they share
  (director, writer, actors, then the rarest shared tag or genre);
- ``popularity``: popular now.

One source movie is named at most :data:`MAX_SAME_SOURCE` times in a list; past that, the
next component that put the movie up gives its reason.
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


_COUNTS: dict[int, tuple[ModelBundle, dict[str, int]]] = {}


def _token_counts(bundle: ModelBundle) -> dict[str, int]:
    """How many movies carry each content token, once per loaded bundle."""
    kept = _COUNTS.get(id(bundle))
    if kept is not None and kept[0] is bundle:
        return kept[1]
    values = bundle.extra.get("attr_values")
    counts: dict[str, int] = {}
    if values is not None and len(values):
        tokens, n = np.unique(np.asarray(values), return_counts=True)
        counts = dict(zip(tokens.tolist(), n.tolist(), strict=True))
    if len(_COUNTS) >= 4:
        _COUNTS.clear()
    _COUNTS[id(bundle)] = (bundle, counts)
    return counts


def content_reason(bundle: ModelBundle, source: int, target: int) -> str:
    title = str(bundle.titles[source])
    shared = attributes_of(bundle, source) & attributes_of(bundle, target)
    counts = _token_counts(bundle)
    for kind, phrase in SHARED_PHRASES:
        # the strongest shared trait: the rarest in the catalogue (Crime before Action)
        found = [v for v in shared if v.startswith(f"{kind}=")]
        values = [v.split("=", 1)[1] for v in sorted(found, key=lambda v: (counts.get(v, 0), v))]
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


#: at most this many reasons of one list name the same movie of the user's history
MAX_SAME_SOURCE = 2
_RECENCY_MODELS = (("item", "neighbor"), ("session", "session"), ("sequence", "sequence"))


def explain_items(
    bundle: ModelBundle,
    history: UserHistory,
    weights: BlendWeights,
    item_parts: dict[str, F64],
    items: npt.NDArray[np.int64],
) -> list[str]:
    """:func:`explain` from the weighted parts of the recommended movies only (aligned with
    ``items``), as candidate scoring gives them.

    Each movie's reason comes from the component that gave it the most; when that reason
    would name a movie of the user's history that earlier reasons of the list already named
    :data:`MAX_SAME_SOURCE` times, the next component that put the movie up (a positive
    part) speaks instead, so one list reads varied."""
    names = [n for n in item_parts if n != "popularity" or len(item_parts) == 1]
    targets = items.tolist()
    ranked: dict[int, list[str]] = {}
    for j, t in enumerate(targets):
        order = sorted(names, key=lambda n: -item_parts[n][j]) if names else ["popularity"]
        # the winner speaks first; the others only if they put the movie up too
        ranked[t] = order[:1] + [n for n in order[1:] if item_parts[n][j] > 0]
    speaker = _Speaker(bundle, history, weights, targets)
    used: dict[int, int] = {}
    reasons: list[str] = []
    for t in targets:
        choice: tuple[str, int | None] | None = None
        avoid = {src for src, n in used.items() if n >= MAX_SAME_SOURCE}
        # the components that put the movie up, then taste and content over the history
        # movies not named enough yet
        for comp in [*ranked[t], "cf", "content"]:
            said = speaker.reason(comp, t, avoid)
            if said is None:
                continue
            if choice is None:
                choice = said
            if said[1] is None or said[1] not in avoid:
                choice = said
                break
        text, source = choice if choice is not None else ("popular now", None)
        if source is not None:
            used[source] = used.get(source, 0) + 1
        reasons.append(text)
    return reasons


class _Speaker:
    """Each component's reason for a movie, with the history movie it names (sources of a
    component are computed once per list, for the movies that ask for them)."""

    def __init__(self, bundle: ModelBundle, history: UserHistory, weights: BlendWeights,
                 targets: list[int]) -> None:
        self.bundle, self.history, self.weights, self.targets = bundle, history, weights, targets
        self.sources: dict[str, dict[int, int]] = {}
        liked = history.item_idx[history.confidence > np.median(history.confidence)] if len(
            history) else history.item_idx
        self.liked = liked if liked.size else history.item_idx

    def _sources(self, comp: str) -> dict[int, int]:
        if comp not in self.sources:
            h, w = self.history, self.weights
            if comp == "peers":
                self.sources[comp] = peer_sources(self.bundle, h, w.peers_decay,
                                                  w.peers_length, self.targets)
            else:
                model = dict(_RECENCY_MODELS)[comp]
                recency = {"item": (1.0, len(h) + 1),
                           "session": (w.session_decay, w.session_length),
                           "sequence": (w.sequence_decay, w.sequence_length)}[comp]
                self.sources[comp] = _best_neighbor_sources(
                    self.bundle, model, h.item_idx, h.recency_weights(*recency), self.targets)
        return self.sources[comp]

    def reason(self, comp: str, t: int, avoid: set[int] = frozenset()  # type: ignore[assignment]
               ) -> tuple[str, int | None] | None:
        """``(reason, the history movie it names)``, or None when ``comp`` has nothing to
        say about ``t``; taste and content pick among history movies not in ``avoid``."""
        b, h = self.bundle, self.history
        if comp in ("item", "session", "sequence") and len(h):
            src = self._sources(comp).get(t)
            if src is None:
                return None
            just = " just" if comp == "sequence" else ""
            return f"because you{just} watched {b.titles[src]}", src
        if comp == "peers" and len(h):
            src = self._sources(comp).get(t)
            if src is None:
                return None
            return f"fans of {b.titles[src]} also watched this", src
        if comp == "stage":
            return ("popular with new members" if len(h) == 0 else
                    "popular with people who have watched as many movies as you"), None
        if comp == "cf" and len(h):
            src = _closest(b.item_factors, _without(self.liked, avoid), t)
            if src is None:
                return None
            return f"people who liked {b.titles[src]} also liked this", src
        if comp == "content" and len(h):
            src = _closest(b.content_vectors, _without(h.item_idx, avoid), t)
            if src is None:
                return None
            return content_reason(b, src, t), src
        if comp == "popularity":
            return "popular now", None
        return None


def _without(sources: npt.NDArray[np.int64], avoid: set[int]) -> npt.NDArray[np.int64]:
    if not avoid:
        return sources
    return sources[~np.isin(sources, np.fromiter(avoid, dtype=np.int64, count=len(avoid)))]
