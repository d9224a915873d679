"""Peer sequences for the ``peers`` component (:mod:`recsys_core.peers`): each training
user's movies with their place in the user's rating sequence, by user and by movie.

Serving holds these arrays, so they are capped: the ``max_users`` most recently active users,
each with their newest ``max_per_user`` interactions.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recsys_core.artifacts import PEER_ARRAYS
from training.matrices import user_sequences


def fit_peer_sequences(
    user_idx: npt.NDArray[np.int64],
    item_idx: npt.NDArray[np.int64],
    timestamps: npt.NDArray[np.float64],
    n_items: int,
    max_users: int = 5000,
    max_per_user: int = 500,
) -> dict[str, npt.NDArray[np.generic]]:
    """The :data:`~recsys_core.artifacts.PEER_ARRAYS` of these interactions (in recorded order
    within a second). Peers are numbered by their first interaction's order, not by the
    training users' indexes."""
    user_idx = np.asarray(user_idx, dtype=np.int64)
    item_idx = np.asarray(item_idx, dtype=np.int64)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    n = user_idx.size
    seq = user_sequences(user_idx, timestamps)  # ties in recorded order
    i, t = item_idx[seq.order], timestamps[seq.order]
    starts, group, position = seq.starts, seq.group, seq.position
    ends = np.r_[starts[1:], n]
    # the most recently active users, each with their newest interactions
    last_time = t[ends - 1] if n else np.zeros(0)
    kept_users = np.sort(np.argsort(-last_time, kind="stable")[:max_users])
    keep_user = np.zeros(starts.size, dtype=bool)
    keep_user[kept_users] = True
    keep = keep_user[group] & (position >= (ends - starts)[group] - max_per_user)
    peer = (np.cumsum(keep_user) - 1)[group[keep]]
    items, positions = i[keep], position[keep].astype(np.float32)
    n_peers = int(kept_users.size)
    user_indptr = np.r_[0, np.cumsum(np.bincount(peer, minlength=n_peers))].astype(np.int64)
    by_item = np.lexsort((peer, items))
    item_indptr = np.r_[0, np.cumsum(np.bincount(items, minlength=n_items))].astype(np.int64)
    arrays: list[npt.NDArray[np.generic]] = [
        user_indptr, items.astype(np.int32), positions,
        item_indptr, peer[by_item].astype(np.int32), positions[by_item],
    ]
    return dict(zip(PEER_ARRAYS, arrays, strict=True))
