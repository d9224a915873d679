"""The ``peers`` component: what people who rated the user's newest movies rated around them.

A sequence-aware user kNN over the training users' rating sequences (kept in the bundle by
:func:`training.models.peers.fit_peer_sequences`):
- the query is the user's newest movies ``h_k``, weighted ``w_k = decay ** rank`` (rank in
  distinct seconds, :meth:`UserHistory.recency_ranks`, up to ``length`` ranks back);
- a peer ``v``'s similarity is ``sim_v = Σ_k w_k [v rated h_k] / n_v ** norm_power``; the
  ``neighbours`` most similar peers vote;
- peer ``v`` votes for each movie ``i`` it rated with
  ``sim_v · Σ_k w_k [v rated h_k] · exp(-|pos_v(i) − pos_v(h_k)| / bandwidth)``, where
  ``pos_v`` is the place in ``v``'s sequence: movies rated just before or after the ones the
  user just rated count most.
Everything is a few gathers and bincounts over the peers' rows: no loop over the catalogue.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recsys_core.artifacts import PEER_ARRAYS, ModelBundle
from recsys_core.history import UserHistory
from recsys_core.sparse import row_positions

F64 = npt.NDArray[np.float64]


def has_peers(bundle: ModelBundle) -> bool:
    return all(name in bundle.extra for name in PEER_ARRAYS)


@dataclass(frozen=True)
class PeerVotes:
    """The query, the voting peers and where each query movie sits in their sequences."""

    query: npt.NDArray[np.int64]  # movie indexes of the query, (q,)
    weights: F64  # w_k, (q,)
    peers: npt.NDArray[np.int64]  # voting peers, (p,)
    similarity: F64  # sim_v of the voting peers, (p,)
    anchors: npt.NDArray[np.float32]  # pos_v(h_k), NaN where v did not rate h_k, (p, q)


#: the last :func:`peer_votes` answer: a request asks twice, for the scores and then for the
#: reasons (bundle weakly referenced, so a replaced model is not kept alive by it)
_last: tuple[weakref.ref[ModelBundle], UserHistory, float, int, PeerVotes | None] | None = None


def peer_votes(
    bundle: ModelBundle, history: UserHistory, decay: float, length: int
) -> PeerVotes | None:
    """The voting peers for this history, or None (no query, no peer sharing a movie)."""
    global _last
    last = _last
    if (last is not None and last[1] is history and last[0]() is bundle
            and last[2] == decay and last[3] == length):
        return last[4]
    votes = _peer_votes(bundle, history, decay, length)
    _last = (weakref.ref(bundle), history, decay, length, votes)
    return votes


def _peer_votes(
    bundle: ModelBundle, history: UserHistory, decay: float, length: int
) -> PeerVotes | None:
    if len(history) == 0 or not has_peers(bundle):
        return None
    params = bundle.params
    neighbours = int(params.get("peers_neighbours", 50))
    norm_power = float(params.get("peers_norm_power", 0.3))
    w_all = history.recency_weights(decay, length)
    keep = np.flatnonzero(w_all > 0)
    if keep.size == 0:
        return None
    query, weights = history.item_idx[keep], w_all[keep]
    x = bundle.extra
    user_indptr = x["peers_user_indptr"]
    n_peers = user_indptr.size - 1
    flat, lengths = row_positions(x["peers_item_indptr"], query)
    if flat.size == 0:
        return None
    users = x["peers_item_users"][flat].astype(np.int64)
    k_of = np.repeat(np.arange(query.size), lengths)
    counts = np.maximum(np.diff(user_indptr), 1).astype(np.float64)
    sim: F64 = np.bincount(users, weights=weights[k_of], minlength=n_peers) * counts ** -norm_power
    top = min(neighbours, n_peers)
    peers = np.argpartition(-sim, top - 1)[:top] if top < n_peers else np.arange(n_peers)
    peers = np.sort(peers[sim[peers] > 0])
    if peers.size == 0:
        return None
    slot = np.full(n_peers, -1, dtype=np.int64)
    slot[peers] = np.arange(peers.size)
    anchors = np.full((peers.size, query.size), np.nan, dtype=np.float32)
    hit = slot[users] >= 0
    anchors[slot[users[hit]], k_of[hit]] = x["peers_item_positions"][flat[hit]]
    return PeerVotes(query, weights, peers, sim[peers], anchors)


def _kernel(bundle: ModelBundle, votes: PeerVotes) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], F64
]:
    """For every movie of every voting peer: (peer slot, movie, its votes summed over the
    query movies, ``Σ_k w_k · exp(-|gap| / bandwidth)``). This is most of a request's time:
    the (query movie, movie) array is built in place in float32 (the positions are float32
    already; the kernel's relative error, 1e-7, is far below the gaps between scores) and
    summed with the weights by one matrix-vector product. (Expanding only the anchored
    pairs, about two in five, is slower: the gathers cost more than the broadcasts they
    save.)"""
    x = bundle.extra
    bandwidth = float(bundle.params.get("peers_bandwidth", 10.0))
    flat, lengths = row_positions(x["peers_user_indptr"], votes.peers)
    slot = np.repeat(np.arange(votes.peers.size), lengths)
    items = x["peers_user_items"][flat].astype(np.int64)
    # (q, e) float32, NaN: no anchor; each peer's column repeated over its movies
    gap = np.repeat(np.ascontiguousarray(votes.anchors.T), lengths, axis=1)
    np.subtract(x["peers_user_positions"][flat][None, :], gap, out=gap)
    np.abs(gap, out=gap)
    np.multiply(gap, np.float32(-1.0 / bandwidth), out=gap)
    np.exp(gap, out=gap)
    np.fmax(gap, np.float32(0.0), out=gap)  # NaN (no anchor) → 0; votes are never negative
    summed: F64 = (votes.weights.astype(np.float32) @ gap).astype(np.float64)
    return slot, items, summed


def _target_votes(bundle: ModelBundle, votes: PeerVotes, targets: npt.NDArray[np.int64]
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                             npt.NDArray[np.int64], F64]:
    """The votes for the ``targets`` only, found from the movie-major index (who rated each
    target, where in their sequence): (peer slot, query index, target, vote) per anchored
    (peer, query movie) pair of a voting peer who rated the target."""
    x = bundle.extra
    bandwidth = float(bundle.params.get("peers_bandwidth", 10.0))
    slot, k = np.nonzero(~np.isnan(votes.anchors))  # by peer, then query movie
    rows, lengths = row_positions(x["peers_item_indptr"], targets)
    users = x["peers_item_users"][rows].astype(np.int64)
    by_user = np.full(x["peers_user_indptr"].size - 1, -1, dtype=np.int64)
    by_user[votes.peers] = np.arange(votes.peers.size)
    voter = by_user[users]
    hit = voter >= 0
    first = np.searchsorted(slot, voter[hit])  # a peer's pairs are consecutive
    count = np.searchsorted(slot, voter[hit], side="right") - first
    pair = np.repeat(first, count) + (np.arange(int(count.sum()))
                                      - np.repeat(np.cumsum(count) - count, count))
    movie = np.repeat(np.repeat(targets, lengths)[hit], count)
    position = np.repeat(x["peers_item_positions"][rows][hit], count)
    gap = np.abs(position - votes.anchors[slot[pair], k[pair]]).astype(np.float64)
    vote = np.exp(gap / -bandwidth) * votes.weights[k[pair]]
    return slot[pair], k[pair], movie, vote


def peer_scores(
    bundle: ModelBundle, history: UserHistory, decay: float, length: int
) -> F64 | None:
    """The ``peers`` score of every movie (see the module), or None without votes."""
    votes = peer_votes(bundle, history, decay, length)
    if votes is None:
        return None
    slot, items, summed = _kernel(bundle, votes)
    vals = summed * votes.similarity[slot]
    out: F64 = np.bincount(items, weights=vals, minlength=bundle.n_items).astype(np.float64)
    return out


def peer_sources(
    bundle: ModelBundle, history: UserHistory, decay: float, length: int, targets: list[int]
) -> dict[int, int]:
    """For each target, the query movie whose votes for it are largest (targets without
    votes are left out): the movie a reason names."""
    votes = peer_votes(bundle, history, decay, length)
    if votes is None or not targets:
        return {}
    tcols = np.asarray(targets, dtype=np.int64)
    slot, k, movies, vote = _target_votes(bundle, votes, tcols)
    if not movies.size:
        return {}
    position = np.searchsorted(np.sort(tcols), movies)
    order = np.argsort(tcols)
    by_target = np.zeros((tcols.size, votes.query.size))
    np.add.at(by_target, (order[position], k), vote * votes.similarity[slot])
    best = np.argmax(by_target, axis=1)
    return {int(t): int(votes.query[b]) for t, b, row in zip(tcols, best, by_target, strict=True)
            if row[b] > 0}
