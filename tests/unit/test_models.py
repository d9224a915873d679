"""training.models: ALS, EASE / item-kNN neighbours, sittings, popularity, content, ratings.

Real-data tests share one 90/10 split of ml-100k (the session's ``ml100k`` fixture) and fit
each model at most once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_core.confidence import ConfidenceRule
from recsys_core.dataset import Dataset
from recsys_core.metrics import rmse
from recsys_core.rating import solve_user
from recsys_core.vocab import Vocabulary
from training.matrices import TrainingData, build_training_data
from training.models import rating as rating_module
from training.models.als import AlsModel, fit_als
from training.models.content import fit_content_model, movie_tokens
from training.models.ease import (
    DENSE_ROW_SHARE,
    NeighborModel,
    _symmetrise_upper,
    fit_ease,
    fit_item_knn,
    fit_neighbors,
    gram_matrix,
    session_baskets,
)
from training.models.popularity import fit_popularity
from training.models.rating import RatingModel, fit_rating_model
from training.pipeline import movie_vocabulary

TOP_N = 50
DAY = 86400.0


@dataclass
class Split:
    dataset: Dataset
    train: pd.DataFrame
    test: pd.DataFrame
    movies: Vocabulary
    data: TrainingData


@pytest.fixture(scope="module")
def split(ml100k: Dataset) -> Split:
    dataset = ml100k
    inter = dataset.interactions
    perm = np.random.default_rng(0).permutation(len(inter))
    cut = len(inter) // 10
    test, train = inter.iloc[perm[:cut]], inter.iloc[perm[cut:]]
    movies = movie_vocabulary(dataset, train)
    return Split(dataset, train, test, movies, build_training_data(train, movies, ConfidenceRule()))


@pytest.fixture(scope="module")
def als(split: Split) -> AlsModel:
    return fit_als(split.data.confidence, factors=16, regularization=0.1, iterations=5, seed=0)


@pytest.fixture(scope="module")
def watched(split: Split) -> npt.NDArray[np.bool_]:
    """Movies with at least one interaction in the training split."""
    return np.asarray(split.data.binary.sum(axis=0)).ravel() > 0


@pytest.fixture(scope="module")
def ease(split: Split, watched: npt.NDArray[np.bool_]) -> NeighborModel:
    # over the watched movies, as fit_neighbors does
    return fit_ease(split.data.binary[:, watched], regularization=500.0, top_n=TOP_N)


@pytest.fixture(scope="module")
def knn(split: Split) -> NeighborModel:
    return fit_item_knn(split.data.binary, top_n=TOP_N)


@pytest.fixture(scope="module")
def rating_model(split: Split) -> RatingModel:
    with threadpool_limits(1, "blas"):
        return fit_rating_model(split.data.ratings, factors=32, iterations=12, seed=0)


@pytest.fixture(scope="module")
def content(split: Split) -> npt.NDArray[np.float32]:
    years = (
        split.dataset.movies.set_index("movie_id")["year"]
        .reindex(list(split.movies.ids))
        .astype("Float64")
        .fillna(0)
        .to_numpy(np.float64)
        .astype(np.int32)
    )
    tokens = movie_tokens(split.movies, split.dataset.attributes, years)
    with threadpool_limits(1, "blas"):
        return fit_content_model(tokens, dim=64, seed=0).vectors


def _row_ids(model: NeighborModel) -> npt.NDArray[np.int64]:
    return np.repeat(np.arange(model.indptr.size - 1), np.diff(model.indptr))


# --- ALS --------------------------------------------------------------------------------


def test_als_factors_are_finite_with_one_row_per_user_and_movie(
    split: Split, als: AlsModel
) -> None:
    n_users, n_items = split.data.confidence.shape
    assert als.user_factors.shape == (n_users, 16)
    assert als.item_factors.shape == (n_items, 16) == (1682, 16)
    assert als.user_factors.dtype == als.item_factors.dtype == np.float32
    assert np.isfinite(als.user_factors).all() and np.isfinite(als.item_factors).all()
    assert als.regularization == 0.1


def test_als_scores_a_users_own_movies_above_the_rest(split: Split, als: AlsModel) -> None:
    scores = als.user_factors @ als.item_factors.T
    seen = split.data.binary.toarray().astype(bool)
    own = np.where(seen, scores, np.nan)
    other = np.where(~seen, scores, np.nan)
    better = np.nanmean(own, axis=1) > np.nanmean(other, axis=1)
    assert better.mean() > 0.95


# --- EASE and item-kNN ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["ease", "knn"])
def test_neighbor_model_has_finite_sparse_rows_of_the_right_shape(
    split: Split, request: pytest.FixtureRequest, which: str
) -> None:
    model: NeighborModel = request.getfixturevalue(which)
    watched: npt.NDArray[np.bool_] = request.getfixturevalue("watched")
    n = int(watched.sum()) if which == "ease" else len(split.movies)
    assert 1600 < n <= 1682
    assert model.indptr.shape == (n + 1,) and model.indptr.dtype == np.int64
    assert model.indptr[0] == 0 and np.all(np.diff(model.indptr) >= 0)
    assert np.all(np.diff(model.indptr) <= TOP_N)
    assert model.indices.dtype == np.int32 and model.scores.dtype == np.float32
    assert model.indices.shape == model.scores.shape == (int(model.indptr[-1]),)
    assert model.indices.min() >= 0 and model.indices.max() < n
    assert np.isfinite(model.scores).all()
    assert model.to_csr(n).shape == (n, n)
    assert model.method == {"ease": "ease", "knn": "item_knn"}[which]


@pytest.mark.parametrize("which", ["ease", "knn"])
def test_neighbor_model_rows_exclude_the_movie_itself(
    request: pytest.FixtureRequest, which: str
) -> None:
    model: NeighborModel = request.getfixturevalue(which)
    assert not np.any(model.indices == _row_ids(model))


def test_ease_keeps_top_n_neighbours_per_movie_sorted_by_index(ease: NeighborModel) -> None:
    assert np.all(np.diff(ease.indptr) == TOP_N)
    rows = ease.indices.reshape(-1, TOP_N)
    assert np.all(np.diff(rows, axis=1) > 0)


def test_ease_with_large_regularization_approaches_cooccurrence_over_lambda() -> None:
    # For lambda >> |X'X|, P = (X'X + lambda I)^-1 ~ (I - X'X / lambda) / lambda, so
    # B_ij = -P_ij / P_jj ~ (X'X)_ij / lambda: the neighbour scores are co-occurrence counts.
    x = sp.csr_matrix(
        np.array(
            [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1], [1, 1, 0, 1]], np.float32
        )
    )
    lam = 1e6
    model = fit_ease(x, regularization=lam, top_n=2)
    dense = model.to_csr(4).toarray()
    # co-occurrences: (0,1)=3, (0,2)=1, (0,3)=2, (1,2)=2, (1,3)=1, (2,3)=0
    # each row keeps its two largest: 0 -> {1: 3, 3: 2}, 1 -> {0: 3, 2: 2},
    # 2 -> {1: 2, 0: 1}, 3 -> {0: 2, 1: 1}
    expected = np.array(
        [[0, 3, 0, 2], [3, 0, 2, 0], [1, 2, 0, 0], [2, 1, 0, 0]], dtype=np.float64
    )
    np.testing.assert_allclose(dense * lam, expected, rtol=1e-3)


def test_ease_neighbours_exclude_the_movie_itself_when_top_n_covers_the_catalogue() -> None:
    x = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]], np.float32))
    model = fit_ease(x, regularization=1.0, top_n=10)
    assert not np.any(model.indices == _row_ids(model))


def test_item_knn_known_cosine_similarities() -> None:
    # users x movies; columns: m0 = (1,1,0), m1 = (1,0,1), m2 = (0,1,0)
    # cos(m0, m1) = 1 / (sqrt2 sqrt2) = 0.5;  cos(m0, m2) = 1 / sqrt2 = 0.707107;  cos(m1, m2) = 0
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0]], np.float32))
    dense = fit_item_knn(x, top_n=5).to_csr(3).toarray()
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(dense, [[0, 0.5, s], [0.5, 0, 0], [s, 0, 0]], rtol=1e-6)
    # top_n = 1 keeps m0's best neighbour only
    top1 = fit_item_knn(x, top_n=1).to_csr(3).toarray()
    np.testing.assert_allclose(top1, [[0, 0, s], [0.5, 0, 0], [s, 0, 0]], rtol=1e-6)


def test_item_knn_gives_an_empty_row_to_a_movie_nobody_watched() -> None:
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0]], np.float32))
    model = fit_item_knn(x, top_n=5)
    assert np.diff(model.indptr).tolist() == [1, 1, 0]


def _head_matrix() -> sp.csr_matrix:
    # interactions per movie: m0 = 3, m1 = 2, m2 = 1, m3 = 0
    return sp.csr_matrix(
        np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], np.float32)
    )


def test_fit_neighbors_over_the_whole_catalogue_equals_fit_ease() -> None:
    x = _head_matrix()[:, :3]  # every movie watched
    full, direct = fit_neighbors(x, 10.0, top_n=1), fit_ease(x, 10.0, top_n=1)
    np.testing.assert_array_equal(full.indptr, direct.indptr)
    np.testing.assert_array_equal(full.indices, direct.indices)
    np.testing.assert_array_equal(full.scores, direct.scores)


def test_fit_neighbors_fits_ease_on_watched_movies_only() -> None:
    x = _head_matrix()
    model = fit_neighbors(x, 10.0, top_n=5)
    sub = fit_ease(x[:, :3], 10.0, top_n=5)
    # m3 (never watched) gets no row; the others are EASE over m0..m2, indexes unchanged
    assert np.diff(model.indptr).tolist() == [2, 2, 2, 0]
    np.testing.assert_array_equal(model.indices, sub.indices)
    np.testing.assert_array_equal(model.scores, sub.scores)


def test_fit_neighbors_keeps_the_most_watched_max_dense_items() -> None:
    x = _head_matrix()
    model = fit_neighbors(x, 10.0, top_n=5, max_dense_items=2)
    sub = fit_ease(x[:, :2], 10.0, top_n=5)
    # head = {m0, m1}: each is the other's only neighbour; m2 and m3 get empty rows
    assert model.method == "ease"
    assert np.diff(model.indptr).tolist() == [1, 1, 0, 0]
    assert model.indices.tolist() == [1, 0]
    np.testing.assert_array_equal(model.scores, sub.scores)


def test_fit_neighbors_maps_head_indexes_back_to_the_catalogue() -> None:
    # m0 is unwatched, so the head is m1..m3 and sub-model index 0 means catalogue movie 1
    x = sp.csr_matrix(np.array([[0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1]], np.float32))
    model = fit_neighbors(x, 10.0, top_n=5)
    sub = fit_ease(x[:, 1:], 10.0, top_n=5)
    assert np.diff(model.indptr).tolist() == [0, 2, 2, 2]
    np.testing.assert_array_equal(model.indices, sub.indices + 1)


# --- sittings ---------------------------------------------------------------------------


def test_session_baskets_split_a_user_at_the_gap() -> None:
    # user 0: t = 0, 30 | 100, 160 (gap 70 > 60, then exactly 60: same sitting)
    # user 1: t = 0, 10 (one sitting); rows given out of order
    user = np.array([0, 1, 0, 0, 1, 0], dtype=np.int64)
    item = np.array([3, 4, 0, 2, 1, 1], dtype=np.int64)
    ts = np.array([100.0, 10.0, 0.0, 160.0, 0.0, 30.0])
    baskets = session_baskets(user, item, ts, n_items=5, gap_seconds=60.0)
    assert baskets.shape == (3, 5)
    expected = [
        [1, 1, 0, 0, 0],  # user 0, t = 0 and 30: movies 0 and 1
        [0, 0, 1, 1, 0],  # user 0, t = 100 and 160: movies 3 and 2
        [0, 1, 0, 0, 1],  # user 1: movies 1 and 4
    ]
    np.testing.assert_array_equal(baskets.toarray(), expected)


def test_session_baskets_never_join_two_users() -> None:
    baskets = session_baskets(
        np.array([0, 1]), np.array([0, 1]), np.array([5.0, 6.0]), n_items=2, gap_seconds=60.0
    )
    np.testing.assert_array_equal(baskets.toarray(), np.eye(2))


def test_session_baskets_of_nothing_is_an_empty_matrix() -> None:
    empty = np.zeros(0, dtype=np.int64)
    baskets = session_baskets(empty, empty, np.zeros(0), n_items=4)
    assert baskets.shape == (0, 4)


# --- popularity -------------------------------------------------------------------------


def test_popularity_known_values() -> None:
    # counts (3, 1, 0): log1p -> (1.386294, 0.693147, 0) / 1.386294 = (1, 0.5, 0)
    pop = fit_popularity(np.array([0, 0, 1, 0]), np.zeros(4), n_items=3)
    assert pop.dtype == np.float32
    np.testing.assert_allclose(pop, [1.0, 0.5, 0.0], rtol=1e-6)


def test_popularity_decay_lowers_old_movies() -> None:
    # one interaction each: movie 0 ten half-lives ago, movie 1 now
    now = 1_000 * DAY
    ts = np.array([now - 100 * DAY, now])
    plain = fit_popularity(np.array([0, 1]), ts, n_items=2)
    decayed = fit_popularity(np.array([0, 1]), ts, n_items=2, half_life_days=10.0)
    np.testing.assert_allclose(plain, [1.0, 1.0])
    # movie 0 weighs 2**-10: log1p(2**-10) / log1p(1)
    np.testing.assert_allclose(decayed, [math.log1p(2**-10) / math.log(2), 1.0], rtol=1e-5)
    # an explicit reference time ages both
    later = fit_popularity(np.array([0, 1]), ts, n_items=2, half_life_days=10.0, now=now + 10 * DAY)
    np.testing.assert_allclose(later[1], 1.0)
    assert later[0] < decayed[0]


def test_popularity_on_ml100k_is_in_unit_range_with_the_most_rated_movie_at_one(
    split: Split,
) -> None:
    pairs = split.data.pairs
    pop = fit_popularity(
        pairs["movie_idx"].to_numpy(), pairs["timestamp"].to_numpy(np.float64), len(split.movies)
    )
    assert pop.shape == (1682,)
    assert pop.min() >= 0.0 and pop.max() == pytest.approx(1.0)
    most_rated = split.train["movie_id"].value_counts().idxmax()
    assert most_rated == "50"  # Star Wars (1977)
    assert pop[split.movies.index(most_rated)] == pytest.approx(1.0)
    # more ratings, higher popularity
    counts = np.bincount(pairs["movie_idx"].to_numpy(), minlength=len(split.movies))
    order = np.argsort(counts, kind="stable")
    assert np.all(np.diff(pop[order]) >= 0)


def test_popularity_decay_on_ml100k_lowers_movies_last_seen_long_ago(split: Split) -> None:
    pairs = split.data.pairs
    idx, ts = pairs["movie_idx"].to_numpy(), pairs["timestamp"].to_numpy(np.float64)
    plain = fit_popularity(idx, ts, len(split.movies))
    decayed = fit_popularity(idx, ts, len(split.movies), half_life_days=30.0)
    assert decayed.min() >= 0.0 and decayed.max() == pytest.approx(1.0)
    last_seen = pd.Series(ts).groupby(idx).max()
    old = last_seen.index[last_seen < ts.max() - 180 * DAY].to_numpy()
    assert old.size > 0
    assert np.all(decayed[old] < plain[old])


# --- content ----------------------------------------------------------------------------


def test_movie_tokens_keep_known_kinds_and_add_the_decade() -> None:
    movies = Vocabulary(["1", "2", "3"])
    attributes = pd.DataFrame(
        {
            "movie_id": ["1", "1", "2", "9", "1"],
            "kind": ["genre", "director", "award", "genre", "actor"],
            "value": ["Drama", "m.x", "Oscar", "Comedy", "m.y"],
        }
    )
    tokens = movie_tokens(movies, attributes, np.array([1995, 0, 1987], dtype=np.int32))
    assert tokens == [
        ["genre=Drama", "director=m.x", "actor=m.y", "decade=1990"],
        [],  # "award" is not a content kind; no year
        ["decade=1980"],
    ]


def test_content_vectors_are_unit_rows_or_zero_for_movies_without_tokens() -> None:
    tokens = [
        ["genre=Drama", "director=a"],
        ["genre=Drama", "director=a", "decade=1990"],
        ["genre=Comedy", "decade=1990"],
        ["genre=Comedy", "director=b"],
        [],
    ]
    vectors = fit_content_model(tokens, dim=2, min_df=1).vectors
    assert vectors.dtype == np.float32 and vectors.shape[0] == 5
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms[:4], 1.0, rtol=1e-5)
    assert norms[4] == 0.0
    # the two Drama films by director a are the closest pair
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    best = tuple(int(i) for i in np.unravel_index(np.argmax(sims), sims.shape))
    assert best in {(0, 1), (1, 0)}


def test_content_vectors_without_any_token_are_zero() -> None:
    vectors = fit_content_model([[], [], []]).vectors
    np.testing.assert_array_equal(vectors, np.zeros((3, 1), dtype=np.float32))


def test_content_vectors_on_ml100k_have_unit_or_zero_rows(
    split: Split, content: npt.NDArray[np.float32]
) -> None:
    assert content.shape == (1682, 64)
    norms = np.linalg.norm(content, axis=1)
    unit = np.abs(norms - 1.0) < 1e-4
    assert np.all(unit | (norms == 0.0))
    assert unit.mean() > 0.99  # every ml-100k movie has at least genres


def test_movies_sharing_a_director_are_closer_than_random_pairs(
    split: Split, content: npt.NDArray[np.float32]
) -> None:
    attrs = split.dataset.attributes
    directed = attrs[attrs["kind"] == "director"]
    pairs = []
    for _, group in directed.groupby("value")["movie_id"]:
        ids = split.movies.indices(sorted(set(group)))
        pairs += [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    same = np.array(pairs)
    assert len(same) > 500
    rng = np.random.default_rng(0)
    rand = rng.integers(0, len(split.movies), size=(5000, 2))
    rand = rand[rand[:, 0] != rand[:, 1]]

    def mean_cosine(p: npt.NDArray[np.int64]) -> float:
        return float(np.mean(np.sum(content[p[:, 0]] * content[p[:, 1]], axis=1)))

    assert mean_cosine(same) > mean_cosine(rand) + 0.2


# --- rating model -----------------------------------------------------------------------


def test_rating_model_arrays_are_finite_with_the_right_shapes(
    split: Split, rating_model: RatingModel
) -> None:
    n_users, n_items = split.data.ratings.shape
    assert rating_model.user_factors.shape == (n_users, 32)
    assert rating_model.item_factors.shape == (n_items, 32)
    assert rating_model.user_bias.shape == (n_users,)
    assert rating_model.item_bias.shape == (n_items,)
    for arr in (rating_model.user_factors, rating_model.item_factors,
                rating_model.user_bias, rating_model.item_bias):
        assert arr.dtype == np.float32 and np.isfinite(arr).all()
    assert rating_model.global_mean == pytest.approx(split.train["rating"].mean(), rel=1e-6)


def test_rating_model_beats_the_global_mean_on_held_out_ratings(
    split: Split, rating_model: RatingModel
) -> None:
    users = split.data.users.indices(split.test["user_id"], on_missing="minus_one")
    movies = split.movies.indices(split.test["movie_id"], on_missing="minus_one")
    known = (users >= 0) & (movies >= 0)
    assert known.mean() > 0.99
    truth = split.test["rating"].to_numpy(np.float64)[known]
    predicted = rating_model.predict(users[known], movies[known])
    model_rmse = rmse(truth, predicted)
    baseline = rmse(truth, np.full(truth.size, rating_model.global_mean))
    # about 0.89 against 1.11 on this split
    assert model_rmse < 0.95 * baseline
    assert model_rmse < 0.95


def test_rating_half_step_equals_the_per_user_solve(split: Split) -> None:
    """Every user's exact solve (float32, chunked, in one thread or dealt to two) against
    :func:`recsys_core.rating.solve_user` in float64, item side held fixed."""
    ratings = split.data.ratings
    rng = np.random.default_rng(3)
    q = (rng.standard_normal((ratings.shape[1], 8)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(ratings.shape[1]) * 0.2).astype(np.float32)
    mean = float(ratings.data.mean())
    layout = rating_module._Layout(ratings, mean, chunk_cells=2048)
    one = rating_module._solve_side(layout, q, b, 0.12, 1.0, workers=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rating_module, "PARALLEL_MIN_ROWS", 1)
        two = rating_module._solve_side(layout, q, b, 0.12, 1.0, workers=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    for u in range(0, ratings.shape[0], 37):
        s, e = ratings.indptr[u], ratings.indptr[u + 1]
        idx = ratings.indices[s:e]
        bias, x = solve_user(q[idx], b[idx], ratings.data[s:e], mean, 0.12, 1.0)
        np.testing.assert_allclose(one[1][u], bias, atol=2e-5, err_msg=f"user {u}")
        np.testing.assert_allclose(one[0][u], x, atol=2e-5, err_msg=f"user {u}")


def test_rating_model_conjugate_gradient_matches_exact_solves(
    split: Split, rating_model: RatingModel
) -> None:
    with threadpool_limits(1, "blas"):
        exact = fit_rating_model(split.data.ratings, factors=32, iterations=12, seed=0,
                                 cg_steps=0)
    users = split.data.users.indices(split.test["user_id"], on_missing="minus_one")
    movies = split.movies.indices(split.test["movie_id"], on_missing="minus_one")
    known = (users >= 0) & (movies >= 0)
    truth = split.test["rating"].to_numpy(np.float64)[known]
    cg_rmse = rmse(truth, rating_model.predict(users[known], movies[known]))
    exact_rmse = rmse(truth, exact.predict(users[known], movies[known]))
    assert abs(cg_rmse - exact_rmse) < 0.002
    assert not np.array_equal(rating_model.item_factors, exact.item_factors)


@pytest.mark.parametrize("values", ["ones", "counts", "fractions"])
def test_gram_matrix_with_dense_heavy_rows_equals_the_sparse_product(values: str) -> None:
    # a power-law matrix: some rows long enough for the dense path, most short
    rng = np.random.default_rng(5)
    n_rows, n_cols = 400, 300
    lengths = np.minimum(rng.pareto(1.2, n_rows).astype(int) + 1, n_cols)
    rows = np.repeat(np.arange(n_rows), lengths)
    cols = np.concatenate([rng.choice(n_cols, k, replace=False) for k in lengths])
    data = {"ones": np.ones(rows.size), "counts": rng.integers(1, 4, rows.size).astype(float),
            "fractions": rng.random(rows.size)}[values]
    x = sp.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols))
    assert 10 < (lengths > DENSE_ROW_SHARE * n_cols).sum() < n_rows // 2  # both paths
    expected = (x.T @ x).toarray()
    got = gram_matrix(x)
    assert got.dtype == np.float64
    if values == "fractions":
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_array_equal(got, expected)


def test_symmetrise_upper_mirrors_the_upper_triangle() -> None:
    a = np.random.default_rng(2).standard_normal((37, 37))
    expected = np.triu(a) + np.triu(a, 1).T
    np.testing.assert_array_equal(_symmetrise_upper(a.copy(), block=8), expected)


@pytest.mark.parametrize("cg_steps", [0, 2])
def test_als_cg_steps_reach_implicit(split: Split, cg_steps: int) -> None:
    from implicit.als import AlternatingLeastSquares

    ours = fit_als(split.data.confidence, factors=8, regularization=0.1, iterations=3, seed=0,
                   cg_steps=cg_steps)
    with threadpool_limits(1, "blas"):
        bare = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=1.0, iterations=3,
                                       use_gpu=False, use_cg=cg_steps > 0, random_state=0)
        bare.cg_steps = cg_steps or 3
        bare.fit(split.data.confidence.astype(np.float32).tocsr(), show_progress=False)
        other = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=1.0, iterations=3,
                                        use_gpu=False, use_cg=True, random_state=0)
        other.cg_steps = 3 if cg_steps != 3 else 2
        other.fit(split.data.confidence.astype(np.float32).tocsr(), show_progress=False)
    np.testing.assert_allclose(ours.item_factors, bare.item_factors, rtol=1e-4, atol=1e-5)
    assert not np.allclose(ours.item_factors, other.item_factors, rtol=1e-3, atol=1e-4)
