"""Train/test splits of the evaluation protocols in docs/evaluation.md."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

Stratify = Literal["user", "movie"]


def stratified_split(
    interactions: pd.DataFrame,
    ratio: float = 0.75,
    stratify: Stratify = "user",
    seed: int = 42,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For each user (or movie), a random ``ratio`` of its rows to train, the rest to test;
    test rows whose user or movie is absent from train are dropped."""
    column = "user_id" if stratify == "user" else "movie_id"
    shuffled = interactions.sample(frac=1.0, random_state=seed)
    group = shuffled.groupby(column, sort=False)
    rank = group.cumcount().to_numpy()
    size = group[column].transform("size").to_numpy()
    to_train = rank < np.round(ratio * size)
    train = shuffled[to_train].sort_index()
    test = shuffled[~to_train].sort_index()
    test = test[test["user_id"].isin(set(train["user_id"])) & test["movie_id"].isin(
        set(train["movie_id"]))]
    return train, test


def temporal_split(
    interactions: pd.DataFrame, fraction: float = 0.8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oldest ``fraction`` of events (stable order within equal timestamps) and the rest."""
    ordered = interactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(round(fraction * len(ordered)))
    return ordered.iloc[:cut], ordered.iloc[cut:]
