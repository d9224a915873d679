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


def aggregate_pairs(interactions: pd.DataFrame, rule: ConfidenceRule) -> pd.DataFrame:
    """One row per (user, movie): latest rating, best completion, last time, confidence.

    The result does not depend on the order of the input rows, so duplicated or reordered
    events give the same state as in-order, once-only delivery.
    """
    df = interactions
    if "completion" not in df.columns:
        df = df.assign(completion=np.nan)
    df = df.sort_values(["user_id", "movie_id", "timestamp", "rating"], kind="stable")
    grouped = df.groupby(["user_id", "movie_id"], sort=False)
    rated = df[df["rating"].notna()]
    latest_rating = rated.groupby(["user_id", "movie_id"], sort=False)["rating"].last()
    out = pd.DataFrame(
        {
            "timestamp": grouped["timestamp"].max(),
            "completion": grouped["completion"].max(),
        }
    )
    out["rating"] = latest_rating.reindex(out.index)
    strength = np.maximum(
        np.nan_to_num(rule.rating_strength(out["rating"].to_numpy(np.float64)), nan=0.0),
        np.nan_to_num(
            rule.completion_strength(out["completion"].fillna(0.0).to_numpy(np.float64))
        ),
    )
    out["confidence"] = rule.confidence(strength)
    return out.reset_index()


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
    pairs = pairs[pairs["movie_id"].isin(set(movies.ids))].reset_index(drop=True)
    users = Vocabulary(sorted(pairs["user_id"].unique()), kind="user")
    pairs["user_idx"] = users.indices(pairs["user_id"])
    pairs["movie_idx"] = movies.indices(pairs["movie_id"])
    shape = (len(users), len(movies))
    u, i = pairs["user_idx"].to_numpy(), pairs["movie_idx"].to_numpy()
    conf = sp.csr_matrix((pairs["confidence"].to_numpy(np.float32), (u, i)), shape=shape)
    binary = sp.csr_matrix((np.ones(len(pairs), np.float32), (u, i)), shape=shape)
    rated = pairs["rating"].notna().to_numpy()
    ratings = sp.csr_matrix(
        (pairs["rating"].to_numpy(np.float32)[rated], (u[rated], i[rated])), shape=shape
    )
    return TrainingData(users, movies, pairs, conf, binary, ratings)
