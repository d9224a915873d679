"""benchmarks.synthetic: the shape of the generated dataset (power-law popularity, valid ids,
ratings, sittings) and that the training pipeline accepts it."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.synthetic import (
    END_TIMESTAMP,
    SPAN_SECONDS,
    STAR_SHARES,
    SyntheticArrays,
    describe,
    generate,
    to_dataset,
)
from recsys_core.dataset import ATTRIBUTE_KINDS


@pytest.fixture(scope="module")
def arrays() -> SyntheticArrays:
    return generate(50_000, seed=1)


def test_generate_gives_distinct_pairs_with_valid_indexes(arrays: SyntheticArrays) -> None:
    assert arrays.user_idx.size == 50_000
    assert 0 <= arrays.user_idx.min() and arrays.user_idx.max() < arrays.n_users
    assert 0 <= arrays.movie_idx.min() and arrays.movie_idx.max() < arrays.n_movies
    keys = arrays.user_idx * arrays.n_movies + arrays.movie_idx
    assert np.unique(keys).size == keys.size  # a user rates a movie once
    per_user = np.bincount(arrays.user_idx, minlength=arrays.n_users)
    assert per_user.min() >= 20  # as MovieLens guarantees


def test_generate_popularity_follows_a_power_law(arrays: SyntheticArrays) -> None:
    shape = describe(arrays)
    # uniform popularity would give the top 1 % of movies 1 % of the ratings
    assert shape["top_1pct_movies_share"] > 0.08
    per_movie = np.sort(np.bincount(arrays.movie_idx, minlength=arrays.n_movies))[::-1]
    # the head decays like 1/rank: the 10th movie has several times the 100th one's ratings
    assert per_movie[9] > 2 * per_movie[99] > 0
    assert shape["most_rated_movie_users_share"] <= 0.6


def test_generate_ratings_and_sittings_look_like_movielens(arrays: SyntheticArrays) -> None:
    values, counts = np.unique(arrays.rating, return_counts=True)
    np.testing.assert_allclose(values, np.arange(1, 11) / 2)
    np.testing.assert_allclose(counts / counts.sum(), STAR_SHARES, atol=0.01)
    assert arrays.timestamp.min() >= END_TIMESTAMP - SPAN_SECONDS
    assert arrays.timestamp.max() <= END_TIMESTAMP + 86_400
    # most consecutive ratings of a user come within a minute: sittings for the session model
    assert describe(arrays)["consecutive_within_60s"] > 0.6


def test_generate_is_deterministic_by_seed() -> None:
    a, b, c = generate(5_000, seed=3), generate(5_000, seed=3), generate(5_000, seed=4)
    np.testing.assert_array_equal(a.movie_idx, b.movie_idx)
    np.testing.assert_array_equal(a.timestamp, b.timestamp)
    assert not np.array_equal(a.movie_idx, c.movie_idx)


def test_generate_refuses_sizes_that_cannot_fit() -> None:
    with pytest.raises(ValueError):
        generate(10_000, n_users=10, n_movies=100)


def test_saved_arrays_load_back_equal(arrays: SyntheticArrays, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "syn.npz"
    arrays.save(path)
    back = SyntheticArrays.load(path)
    assert (back.n_users, back.n_movies) == (arrays.n_users, arrays.n_movies)
    np.testing.assert_array_equal(back.attr_value, arrays.attr_value)


def test_to_dataset_has_string_ids_known_to_the_catalogue(arrays: SyntheticArrays) -> None:
    ds = to_dataset(arrays)
    inter = ds.interactions
    assert len(inter) == arrays.user_idx.size
    assert isinstance(inter["user_id"].iloc[0], str) and isinstance(inter["movie_id"].iloc[0], str)
    catalogue = set(ds.movies["movie_id"])
    assert len(catalogue) == arrays.n_movies
    assert set(inter["movie_id"]) <= catalogue
    assert set(ds.attributes["movie_id"]) <= catalogue
    assert set(ds.attributes["kind"]) <= set(ATTRIBUTE_KINDS)
    assert inter["rating"].dtype == np.float32 and inter["timestamp"].dtype == np.int64
    assert ds.movies["year"].notna().all()
