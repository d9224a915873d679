"""From interaction rows to the matrices the trainers read, with the shared confidence rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from recsys_core.confidence import ConfidenceRule
from recsys_core.history import UserHistory
from recsys_core.vocab import Vocabulary


def _sorted_codes(ids: pd.Series) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
    """Integer codes of raw ids, numbered in the ids' sorted order (so sorting by code sorts
    by id), and the ids of each code; a missing id gets -1."""
    codes, uniques = pd.factorize(ids, sort=True)
    return codes.astype(np.int64, copy=False), np.asarray(uniques, dtype=object)


def _integral_range(values: npt.NDArray[np.generic]) -> tuple[int, int] | None:
    """``(min, max)`` of values that are all whole numbers (as integers), else None."""
    if values.size == 0:
        return None
    if values.dtype.kind in "iub":
        return int(values.min()), int(values.max())
    if values.dtype.kind != "f":
        return None
    low, high = float(np.min(values)), float(np.max(values))
    if not (np.isfinite(low) and np.isfinite(high)) or abs(low) > 2**53 or abs(high) > 2**53:
        return None
    if not np.array_equal(values, np.floor(values)):
        return None
    return int(low), int(high)


@dataclass(frozen=True)
class UserSequences:
    """Interactions grouped by user in time order (ties in input order): ``order`` sorts
    them; in that order, ``group`` numbers each user's run, ``starts`` is where each run
    begins and ``position`` is the interaction's place in its user's history (0: first)."""

    order: npt.NDArray[np.int64]
    group: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    position: npt.NDArray[np.int64]


def user_sequences(
    user_idx: npt.NDArray[np.int64], timestamps: npt.NDArray[np.float64]
) -> UserSequences:
    order = stable_order(timestamps, user_idx)
    u = user_idx[order]
    n = u.size
    first = np.r_[True, u[1:] != u[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first).astype(np.int64)
    group = (np.cumsum(first) - 1).astype(np.int64)
    position = np.arange(n, dtype=np.int64) - starts[group] if n else np.zeros(0, np.int64)
    return UserSequences(order, group, starts, position)


def stable_order(*keys: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    """``np.lexsort(keys)`` (the last key sorts first; ties keep their input order), as one
    stable argsort of a combined 64-bit key when every key holds whole numbers whose ranges
    fit together (for 10M rows: about 1.6 s against 4.5 s for ``np.lexsort`` of two keys);
    otherwise ``np.lexsort`` itself."""
    n = keys[0].size if keys else 0
    ranges = [_integral_range(np.asarray(k)) for k in keys]
    if n == 0 or any(r is None for r in ranges):
        return np.lexsort(keys).astype(np.int64, copy=False)
    spans = [hi - lo + 1 for lo, hi in ranges]  # type: ignore[misc]
    if float(np.prod(np.asarray(spans, dtype=np.float64))) >= 2.0**62:
        return np.lexsort(keys).astype(np.int64, copy=False)
    combined = np.zeros(n, dtype=np.int64)
    scale = 1
    for key, (low, _), span in zip(keys, ranges, spans, strict=True):  # type: ignore[misc]
        combined += (np.asarray(key) - low).astype(np.int64) * scale
        scale *= span
    return np.argsort(combined, kind="stable").astype(np.int64, copy=False)


def aggregate_pairs(interactions: pd.DataFrame, rule: ConfidenceRule) -> pd.DataFrame:
    """One row per (user, movie): latest rating, best completion, last time, confidence.

    The result does not depend on the order of the input rows, so duplicated or reordered
    events give the same state as in-order, once-only delivery. Rows come sorted by user id,
    then movie id. Vectorised over integer codes of the ids (pandas' group-by over string
    keys takes tens of seconds on 10M rows).
    """
    df = interactions
    user_code, user_ids = _sorted_codes(df["user_id"])
    movie_code, movie_ids = _sorted_codes(df["movie_id"])
    ts = df["timestamp"].to_numpy()
    rating = df["rating"].to_numpy()
    if rating.dtype.kind != "f":
        rating = rating.astype(np.float64)
    completion = (df["completion"].to_numpy(np.float64) if "completion" in df.columns
                  else np.full(len(df), np.nan))
    known = (user_code >= 0) & (movie_code >= 0)  # as a group-by drops missing keys
    if not known.all():
        user_code, movie_code = user_code[known], movie_code[known]
        ts, rating, completion = ts[known], rating[known], completion[known]
    key = user_code * max(1, movie_ids.size) + movie_code
    # by pair, then time, then rating (NaN last): a pair's latest rating is its last rated row
    order = stable_order(ts, key)
    key, ts, rating, completion = key[order], ts[order], rating[order], completion[order]
    tied = np.flatnonzero((key[1:] == key[:-1]) & (ts[1:] == ts[:-1]))
    if tied.size:  # rows of one pair at the same time: by rating within the tie, NaN last
        in_tie = np.zeros(key.size, dtype=bool)
        in_tie[tied] = in_tie[tied + 1] = True
        rows = np.flatnonzero(in_tie)
        run = np.cumsum(np.r_[True, rows[1:] != rows[:-1] + 1]
                        | np.r_[True, (key[rows[1:]] != key[rows[:-1]])
                                | (ts[rows[1:]] != ts[rows[:-1]])])
        within = rows[np.lexsort((rating[rows], run))]
        rating[rows] = rating[within]
    edges = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True]) if key.size else np.zeros(1)
    first, last = edges[:-1].astype(np.int64), edges[1:].astype(np.int64) - 1
    rated = np.flatnonzero(~np.isnan(rating))
    group = np.searchsorted(first, rated, side="right") - 1
    newest = np.r_[group[1:] != group[:-1], True] if group.size else np.zeros(0, bool)
    latest = np.full(first.size, np.nan, dtype=rating.dtype)
    latest[group[newest]] = rating[rated[newest]]
    best = np.fmax.reduceat(completion, first) if first.size else completion[:0]
    pair_key = key[first]
    out = pd.DataFrame({
        "user_id": user_ids[pair_key // max(1, movie_ids.size)],
        "movie_id": movie_ids[pair_key % max(1, movie_ids.size)],
        "timestamp": ts[last],
        "completion": best,
        "rating": latest,
    })
    strength = np.maximum(
        np.nan_to_num(rule.rating_strength(out["rating"].to_numpy(np.float64)), nan=0.0),
        np.nan_to_num(
            rule.completion_strength(out["completion"].fillna(0.0).to_numpy(np.float64))
        ),
    )
    out["confidence"] = rule.confidence(strength)
    return out


@dataclass
class TrainingData:
    users: Vocabulary
    movies: Vocabulary
    pairs: pd.DataFrame  # aggregated, with user_idx / movie_idx columns
    confidence: sp.csr_matrix  # users × movies, c_ui
    binary: sp.csr_matrix  # users × movies, 1 where interacted
    ratings: sp.csr_matrix  # users × movies, explicit ratings only

    def history(self, user_idx: int) -> UserHistory:
        s, e = self.confidence.indptr[user_idx], self.confidence.indptr[user_idx + 1]
        rows = self._rows_by_user[s:e]
        p = self.pairs.iloc[rows]
        return UserHistory.build(
            p["movie_idx"].to_numpy(),
            p["confidence"].to_numpy(),
            p["timestamp"].to_numpy(np.float64),
            p["rating"].to_numpy(np.float64),
        )

    @property
    def _rows_by_user(self) -> npt.NDArray[np.int64]:
        cached = self.__dict__.get("_rows_cache")
        if cached is None:
            order = np.lexsort((self.pairs["movie_idx"].to_numpy(), self.pairs["user_idx"]))
            self.__dict__["_rows_cache"] = order
            cached = order
        return np.asarray(cached)


def build_training_data(
    interactions: pd.DataFrame, movies: Vocabulary, rule: ConfidenceRule
) -> TrainingData:
    pairs = aggregate_pairs(interactions, rule)
    movie_idx = movies.indices(pairs["movie_id"].to_numpy(), on_missing="minus_one")
    in_catalogue = movie_idx >= 0
    pairs = pairs[in_catalogue].reset_index(drop=True)
    user_idx, user_ids = _sorted_codes(pairs["user_id"])
    users = Vocabulary(user_ids, kind="user")
    pairs["user_idx"] = user_idx
    pairs["movie_idx"] = movie_idx[in_catalogue]
    shape = (len(users), len(movies))
    u, i = pairs["user_idx"].to_numpy(), pairs["movie_idx"].to_numpy()
    conf = sp.csr_matrix((pairs["confidence"].to_numpy(np.float32), (u, i)), shape=shape)
    # one entry per pair (aggregated): the same structure, stored zeros included
    binary = sp.csr_matrix((np.ones(conf.nnz, np.float32), conf.indices.copy(),
                            conf.indptr.copy()), shape=shape)
    rated = pairs["rating"].notna().to_numpy()
    ratings = sp.csr_matrix(
        (pairs["rating"].to_numpy(np.float32)[rated], (u[rated], i[rated])), shape=shape
    )
    return TrainingData(users, movies, pairs, conf, binary, ratings)
