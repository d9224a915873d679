"""training.matrices: order-independent aggregation of events and the training matrices."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from recsys_core.confidence import ConfidenceRule
from recsys_core.vocab import Vocabulary
from training.matrices import aggregate_pairs, build_training_data, stable_order

RULE = ConfidenceRule()
NAN = float("nan")


def _events() -> pd.DataFrame:
    # (user, movie, rating, timestamp, completion); NaN rating = a watch event
    rows = [
        ("u1", "m1", 2.0, 10, NAN),
        ("u1", "m1", 5.0, 30, NAN),  # the latest rating of (u1, m1)
        ("u1", "m1", 3.0, 20, NAN),
        ("u1", "m2", NAN, 5, 0.2),
        ("u1", "m2", NAN, 7, 0.9),  # the best completion of (u1, m2)
        ("u1", "m2", NAN, 9, 0.5),
        ("u2", "m1", 4.0, 10, NAN),
        ("u2", "m1", NAN, 20, 0.3),  # a later watch does not replace the rating
        ("u2", "m3", 1.0, 15, 0.95),  # rating and completion in one row
        ("u3", "m2", 4.5, 50, NAN),
    ]
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp", "completion"])


def _by_pair(pairs: pd.DataFrame) -> pd.DataFrame:
    return pairs.set_index(["user_id", "movie_id"])


def test_aggregate_pairs_gives_one_row_per_user_movie() -> None:
    pairs = aggregate_pairs(_events(), RULE)
    assert len(pairs) == 5
    assert not pairs.duplicated(["user_id", "movie_id"]).any()
    assert {"user_id", "movie_id", "rating", "completion", "timestamp", "confidence"} <= set(
        pairs.columns
    )


def test_aggregate_pairs_keeps_the_latest_rating_and_last_time() -> None:
    row = _by_pair(aggregate_pairs(_events(), RULE)).loc[("u1", "m1")]
    assert row["rating"] == 5.0  # rated 2 at t=10, 3 at t=20, 5 at t=30
    assert row["timestamp"] == 30
    assert row["confidence"] == pytest.approx(11.0)


def test_aggregate_pairs_keeps_the_best_completion() -> None:
    row = _by_pair(aggregate_pairs(_events(), RULE)).loc[("u1", "m2")]
    assert row["completion"] == pytest.approx(0.9)
    assert np.isnan(row["rating"])
    assert row["timestamp"] == 9
    assert row["confidence"] == pytest.approx(1.0 + 10.0 * 0.9)


def test_aggregate_pairs_a_later_watch_keeps_the_rating() -> None:
    row = _by_pair(aggregate_pairs(_events(), RULE)).loc[("u2", "m1")]
    # rating 4 (strength 0.8) beats completion 0.3: c = 9
    assert row["rating"] == 4.0
    assert row["completion"] == pytest.approx(0.3)
    assert row["timestamp"] == 20
    assert row["confidence"] == pytest.approx(9.0)


def test_aggregate_pairs_confidence_follows_the_rule() -> None:
    pairs = aggregate_pairs(_events(), RULE)
    for p in pairs.itertuples():
        rating = None if np.isnan(p.rating) else float(p.rating)
        completion = None if np.isnan(p.completion) else float(p.completion)
        assert p.confidence == pytest.approx(RULE.combine(rating, completion)), p
    # (u2, m3): rating 1 (0.2) vs completion 0.95: c = 1 + 9.5
    assert _by_pair(pairs).loc[("u2", "m3"), "confidence"] == pytest.approx(10.5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_aggregate_pairs_does_not_depend_on_order_or_duplicates(seed: int) -> None:
    events = _events()
    expected = aggregate_pairs(events, RULE)
    rng = np.random.default_rng(seed)
    # every event delivered one to three times, in a random order
    repeats = rng.integers(1, 4, size=len(events))
    noisy = events.loc[events.index.repeat(repeats)]
    noisy = noisy.iloc[rng.permutation(len(noisy))].reset_index(drop=True)
    got = aggregate_pairs(noisy, RULE)
    pd.testing.assert_frame_equal(got, expected)


def test_aggregate_pairs_breaks_same_time_rating_ties_independently_of_order() -> None:
    a = pd.DataFrame(
        {"user_id": ["u", "u"], "movie_id": ["m", "m"], "rating": [2.0, 4.0],
         "timestamp": [100, 100]}
    )
    b = a.iloc[::-1].reset_index(drop=True)
    ra = aggregate_pairs(a, RULE)
    rb = aggregate_pairs(b, RULE)
    pd.testing.assert_frame_equal(ra, rb)
    assert ra["rating"].tolist() == [4.0]


def test_aggregate_pairs_without_a_completion_column() -> None:
    events = _events().drop(columns="completion")
    events = events[events["rating"].notna()]
    pairs = aggregate_pairs(events, RULE)
    assert pairs["completion"].isna().all()
    np.testing.assert_allclose(
        pairs["confidence"], RULE.from_ratings(pairs["rating"].to_numpy())
    )


def test_build_training_data_shapes_and_values() -> None:
    # m4 is in the catalogue without interactions; m9 is an interaction outside it
    movies = Vocabulary(["m1", "m2", "m3", "m4"], kind="movie")
    events = pd.concat(
        [
            _events(),
            pd.DataFrame(
                [("u4", "m9", 5.0, 60, NAN)],
                columns=["user_id", "movie_id", "rating", "timestamp", "completion"],
            ),
        ],
        ignore_index=True,
    )
    data = build_training_data(events, movies, RULE)
    # u4 only rated an unknown movie: not a training user
    assert data.users.ids == ("u1", "u2", "u3")
    assert data.users.kind == "user"
    assert data.movies is movies
    for m in (data.confidence, data.binary, data.ratings):
        assert m.shape == (3, 4)
    assert len(data.pairs) == 5
    assert data.binary.nnz == 5 and set(data.binary.data) == {1.0}
    # only the four pairs with a rating appear in the rating matrix; (u1, m2) was watched
    assert data.ratings.nnz == 4
    dense_r = data.ratings.toarray()
    assert dense_r[0, 0] == 5.0 and dense_r[0, 1] == 0.0 and dense_r[1, 2] == 1.0
    dense_c = data.confidence.toarray()
    assert dense_c[0, 0] == pytest.approx(11.0)
    assert dense_c[0, 1] == pytest.approx(10.0)
    assert dense_c[2, 1] == pytest.approx(10.0)  # 4.5 stars: 1 + 10 * 0.9
    assert data.confidence.dtype == np.float32
    assert (data.confidence.toarray()[:, 3] == 0).all()
    assert (data.pairs["user_idx"].to_numpy() == data.users.indices(data.pairs["user_id"])).all()


def test_training_data_history_is_ordered_by_time() -> None:
    movies = Vocabulary(["m1", "m2", "m3"], kind="movie")
    data = build_training_data(_events(), movies, RULE)
    u1 = data.history(data.users.index("u1"))
    # (u1, m2) last seen at t=9, (u1, m1) at t=30
    assert u1.item_idx.tolist() == [1, 0]
    np.testing.assert_allclose(u1.timestamps, [9.0, 30.0])
    np.testing.assert_allclose(u1.confidence, [10.0, 11.0])
    assert np.isnan(u1.ratings[0]) and u1.ratings[1] == 5.0
    u3 = data.history(data.users.index("u3"))
    assert u3.item_idx.tolist() == [1]


@pytest.mark.parametrize(
    "kind", ["int", "whole_float", "fractional_float", "wide_range", "one_key"]
)
def test_stable_order_equals_lexsort(kind: str) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    primary = rng.integers(-5, 40, n)
    secondary: npt.NDArray[np.generic] = rng.integers(0, 9, n)  # many full ties
    if kind == "whole_float":
        secondary = secondary.astype(np.float64) + 1.6e9
    elif kind == "fractional_float":
        secondary = secondary + rng.choice([0.0, 0.5], n)
    elif kind == "wide_range":  # the combined key would not fit in 64 bits
        secondary = secondary * (1 << 61)
    keys = (primary,) if kind == "one_key" else (secondary, primary)
    np.testing.assert_array_equal(stable_order(*keys), np.lexsort(keys))


def _aggregate_by_lexsort(events: pd.DataFrame) -> pd.DataFrame:
    """The latest rating of each pair by a plain sort: time, then rating (NaN last)."""
    rows = events.assign(rank=events["rating"].fillna(np.inf))
    rows = rows.sort_values(["user_id", "movie_id", "timestamp", "rank"], kind="stable")
    rated = rows[rows["rating"].notna()].groupby(["user_id", "movie_id"])["rating"].last()
    return rated.rename("rating").reset_index()


@pytest.mark.parametrize("seed", [0, 1])
def test_aggregate_pairs_latest_rating_with_many_same_time_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4000
    events = pd.DataFrame({
        "user_id": rng.integers(0, 20, n).astype(str),
        "movie_id": rng.integers(0, 15, n).astype(str),
        "rating": np.where(rng.random(n) < 0.3, np.nan, rng.integers(1, 11, n) / 2.0),
        "timestamp": rng.integers(0, 4, n) * (1.0 if seed else 1.5),  # whole and fractional
    })
    got = aggregate_pairs(events, RULE)
    expected = _aggregate_by_lexsort(events)
    merged = got.merge(expected, on=["user_id", "movie_id"], how="left", suffixes=("", "_x"))
    np.testing.assert_array_equal(merged["rating"].to_numpy(), merged["rating_x"].to_numpy())
    assert merged["rating"].notna().sum() == len(expected) > 200
