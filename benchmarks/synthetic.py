"""A synthetic MovieLens-shaped dataset of any size, generated vectorised with numpy.

Shape (defaults scale with the interaction count; 10M gives about 140,000 users and
30,000 movies, MovieLens-25M-like proportions):

- movie popularity: Zipf-Mandelbrot, ``p(rank) ∝ 1 / (rank + 20)``, capped so that no movie
  is rated by more than half of the users (MovieLens 25M's most-rated movie: 50 %);
- user activity: at least 20 ratings (as in MovieLens), plus a log-normal tail, at most a
  tenth of the catalogue (or four times the mean, when that is more);
- taste: movies fall into one cluster per main genre; each user draws 40 % of their movies
  from a favourite cluster (same Zipf curve inside it), so co-occurrence and genres carry
  signal;
- ratings: half stars with ml-latest-small's distribution, cut at quantiles of a latent
  score (movie quality + user bias + favourite-cluster bonus + noise);
- timestamps: about four years; each user's ratings come in sittings (a new sitting every
  eighth rating on average) of ratings seconds apart, sittings days apart;
- metadata: title, year, one to three genres (the cluster's first), a director, a writer and
  three actors drawn from Zipf-popular pools of synthetic people.

:func:`generate` returns compact arrays (:class:`SyntheticArrays`, saved with ``np.savez``);
:func:`to_dataset` turns them into a :class:`recsys_core.dataset.Dataset` with string ids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from recsys_core.dataset import Dataset

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
#: ml-latest-small's share of each half star, 0.5 .. 5.0
STAR_SHARES = (0.014, 0.028, 0.018, 0.075, 0.055, 0.199, 0.130, 0.266, 0.085, 0.130)
END_TIMESTAMP = 1_574_000_000  # November 2019, where MovieLens 25M ends
SPAN_SECONDS = 4 * 365 * 86_400
MIN_PER_USER = 20
ZIPF_OFFSET = 20.0
TASTE_SHARE = 0.4
SITTING_LENGTH = 8.0  # mean ratings per sitting
IN_SITTING_GAP = 25.0  # mean seconds between ratings of one sitting

I64 = npt.NDArray[np.int64]


@dataclass
class SyntheticArrays:
    """One row per interaction (``user_idx``, ``movie_idx``, ``rating``, ``timestamp``),
    one per movie (``year``, ``cluster``), and movie attributes as index arrays."""

    user_idx: I64
    movie_idx: I64
    rating: npt.NDArray[np.float32]
    timestamp: I64
    year: I64
    cluster: I64
    attr_movie: I64
    attr_kind: I64  # 0 genre, 1 director, 2 writer, 3 actor
    attr_value: I64  # genre index, or person index within the kind's pool
    n_users: int
    n_movies: int

    def save(self, path: Path) -> None:
        np.savez(path, **{k: np.asarray(v) for k, v in asdict(self).items()})

    @classmethod
    def load(cls, path: Path) -> SyntheticArrays:
        with np.load(path, allow_pickle=False) as z:
            fields = {k: z[k] for k in z.files}
        fields["n_users"] = int(fields["n_users"])
        fields["n_movies"] = int(fields["n_movies"])
        return cls(**fields)


def default_sizes(n_interactions: int) -> tuple[int, int]:
    """(users, movies) in MovieLens-25M-like proportions: 71 ratings per user, 333 per movie
    (small sizes get more movies, up to 2,000, so that every user can find distinct ones)."""
    movies = max(round(n_interactions / 333), min(n_interactions // 10, 2_000), 60)
    return max(30, round(n_interactions / 71)), movies


def _user_counts(rng: np.random.Generator, n_inter: int, n_users: int, cap: int) -> I64:
    """Ratings per user: a floor of 20 (less when there is not room) plus a log-normal tail,
    scaled to sum to ``n_inter``; at most ``cap`` each."""
    floor = min(MIN_PER_USER, n_inter // n_users)
    tail = rng.lognormal(0.0, 1.2, n_users)
    extra = n_inter - floor * n_users
    counts = floor + np.floor(tail / tail.sum() * extra).astype(np.int64)
    counts = np.minimum(counts, cap)
    short = n_inter - int(counts.sum())
    while short > 0:  # rounding and the cap: give the rest to random users with room
        room = np.flatnonzero(counts < cap)
        pick = rng.choice(room, size=min(short, room.size), replace=False)
        counts[pick] += 1
        short -= pick.size
    return counts


def _cluster_sampler(
    weights: npt.NDArray[np.float64], cluster: I64, n_clusters: int
) -> tuple[I64, npt.NDArray[np.float64], I64]:
    """Movies ordered by cluster, their per-cluster CDF shifted by the cluster number (cluster
    ``c`` spans ``(c, c + 1]``), and each cluster's end in that order."""
    order = np.argsort(cluster, kind="stable")
    w = weights[order]
    ends = np.cumsum(np.bincount(cluster, minlength=n_clusters))
    starts = ends - np.bincount(cluster, minlength=n_clusters)
    cdf = np.cumsum(w)
    before = np.concatenate([[0.0], cdf])[starts]
    totals = cdf[ends - 1] - before if cdf.size else np.zeros(n_clusters)
    c = cluster[order]
    cdf = c + (cdf - before[c]) / np.where(totals[c] > 0, totals[c], 1.0)
    return order, cdf, ends


def _draw(
    rng: np.random.Generator,
    users: I64,
    fav: I64,
    sampler: tuple[I64, npt.NDArray[np.float64], I64],
    global_cdf: npt.NDArray[np.float64],
) -> I64:
    """One movie per entry of ``users``: from the user's favourite cluster with probability
    ``TASTE_SHARE``, else from the whole catalogue."""
    order, cdf, ends = sampler
    u = rng.random(users.size)
    out = np.minimum(np.searchsorted(global_cdf, u, side="right"), global_cdf.size - 1)
    taste = rng.random(users.size) < TASTE_SHARE
    c = fav[users[taste]]
    pos = np.searchsorted(cdf, c + u[taste], side="right")
    out[taste] = order[np.minimum(pos, ends[c] - 1)]
    return out.astype(np.int64)


def _sorted_unique(keys: I64) -> I64:
    """``np.unique`` for int64 keys; numpy 2.4's hash-based ``np.unique`` takes 30 s or more
    on 10M keys, a sort and a mask about one second."""
    out = np.sort(keys)
    keep = np.ones(out.size, dtype=bool)
    keep[1:] = out[1:] != out[:-1]
    return out[keep]


def _pairs(
    rng: np.random.Generator, counts: I64, fav: I64, n_movies: int,
    sampler: tuple[I64, npt.NDArray[np.float64], I64], global_cdf: npt.NDArray[np.float64],
) -> I64:
    """Sorted ``user * n_movies + movie`` keys, ``counts[u]`` distinct movies per user: draw
    with replacement, drop repeats, draw again for what is missing."""
    n_users = counts.size
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    keys = _sorted_unique(users * n_movies + _draw(rng, users, fav, sampler, global_cdf))
    for _ in range(200):
        have = np.bincount(keys // n_movies, minlength=n_users)
        missing = counts - have
        if not missing.any():
            break
        want = np.repeat(np.arange(n_users, dtype=np.int64), missing * 2 + 2)
        new = _sorted_unique(want * n_movies + _draw(rng, want, fav, sampler, global_cdf))
        pos = np.minimum(np.searchsorted(keys, new), keys.size - 1)
        new = new[keys[pos] != new]
        rng.shuffle(new)  # keep a random subset of each user's new draws, not the lowest ids
        new_users = new // n_movies
        order = np.argsort(new_users, kind="stable")
        new, new_users = new[order], new_users[order]
        first = np.searchsorted(new_users, new_users)
        new = new[np.arange(new.size) - first < missing[new_users]]
        keys = np.sort(np.concatenate([keys, new]), kind="stable")  # merges two sorted runs
    return keys


def _ratings(rng: np.random.Generator, user: I64, movie: I64, fav: I64, cluster: I64
             ) -> npt.NDArray[np.float32]:
    quality = rng.normal(0.0, 0.5, cluster.size)
    bias = rng.normal(0.0, 0.4, fav.size)
    latent = (quality[movie] + bias[user] + 0.3 * (cluster[movie] == fav[user])
              + rng.normal(0.0, 0.8, user.size))
    stars = np.arange(1, 11, dtype=np.float32) / 2
    # cut points at the target shares' quantiles of the latent score (from a random sample
    # of up to 1M rows: rows are in random order within users and users are independent)
    cuts = np.quantile(latent[:1_000_000], np.cumsum(STAR_SHARES)[:-1] / sum(STAR_SHARES))
    return stars[np.searchsorted(cuts, latent)]


def _timestamps(rng: np.random.Generator, user: I64, counts: I64) -> I64:
    """Per user (rows grouped by user): sittings of ratings seconds apart, spread over a
    random share of the four years (sittings' starts split it at random)."""
    n = user.size
    has = counts > 0
    starts = (np.cumsum(counts) - counts)[has]
    new = rng.random(n) < 1.0 / SITTING_LENGTH
    new[starts] = False  # the first rating opens the first sitting: no gap before it
    within = np.where(new, 0.0, 1.0 + rng.exponential(IN_SITTING_GAP, n))
    within[starts] = 0.0
    within_total = np.bincount(user, weights=within, minlength=counts.size)
    spread = np.where(new, rng.exponential(1.0, n), 0.0)
    spread_total = np.bincount(user, weights=spread, minlength=counts.size)
    room = np.maximum(SPAN_SECONDS - within_total, 0.0)
    active = room * rng.random(counts.size) ** 0.5
    between = spread / np.where(spread_total > 0, spread_total, 1.0)[user] * active[user]
    elapsed = np.cumsum(within + between)
    elapsed -= np.repeat(elapsed[starts], counts[has])
    first = END_TIMESTAMP - SPAN_SECONDS + rng.random(counts.size) * (room - active)
    return (first[user] + elapsed).astype(np.int64)


def _attributes(rng: np.random.Generator, cluster: I64) -> tuple[I64, I64, I64]:
    """A director, a writer, three actors (Zipf-popular pools) and 1-3 genres per movie."""
    n = cluster.size
    parts_movie, parts_kind, parts_value = [], [], []
    n_genres = rng.integers(1, 4, n)
    for slot in range(3):
        has = np.flatnonzero(n_genres > slot)
        value = cluster[has] if slot == 0 else rng.integers(0, len(GENRES), has.size)
        parts_movie.append(has)
        parts_kind.append(np.zeros(has.size, np.int64))
        parts_value.append(value)
    for kind, pool, per_movie in ((1, max(2, n // 4), 1), (2, max(2, n // 3), 1),
                                  (3, max(2, n * 2), 3)):
        w = 1.0 / (np.arange(pool) + 5.0)
        cdf = np.cumsum(w) / w.sum()
        draws = np.minimum(np.searchsorted(cdf, rng.random(n * per_movie)), pool - 1)
        parts_movie.append(np.repeat(np.arange(n), per_movie))
        parts_kind.append(np.full(n * per_movie, kind))
        parts_value.append(rng.permutation(pool)[draws])
    return (np.concatenate(parts_movie).astype(np.int64),
            np.concatenate(parts_kind).astype(np.int64),
            np.concatenate(parts_value).astype(np.int64))


def generate(
    n_interactions: int, n_users: int | None = None, n_movies: int | None = None, seed: int = 0
) -> SyntheticArrays:
    """``n_interactions`` distinct (user, movie) ratings; see the module docstring."""
    du, dm = default_sizes(n_interactions)
    n_users, n_movies = n_users or du, n_movies or dm
    cap = min(n_movies, max(MIN_PER_USER, n_movies // 10, 4 * -(-n_interactions // n_users)))
    if n_interactions > n_users * cap:
        raise ValueError(f"{n_interactions} interactions do not fit {n_users} users "
                         f"× at most {cap} movies each")
    if n_movies < len(GENRES):
        raise ValueError(f"at least {len(GENRES)} movies are needed, not {n_movies}")
    rng = np.random.default_rng(seed)
    counts = _user_counts(rng, n_interactions, n_users, cap)
    n_clusters = len(GENRES)
    cluster = rng.permutation(n_movies) % n_clusters  # every cluster has movies
    fav = rng.integers(0, n_clusters, n_users)
    # popularity rank is a random permutation of the movie ids; the head is capped so that
    # no movie is expected to be rated by more than half of the users
    weights = 1.0 / (rng.permutation(n_movies) + 1.0 + ZIPF_OFFSET)
    weights /= weights.sum()
    weights = np.minimum(weights, 0.5 * n_users / n_interactions)
    global_cdf = np.cumsum(weights) / weights.sum()
    sampler = _cluster_sampler(weights, cluster, n_clusters)
    keys = _pairs(rng, counts, fav, n_movies, sampler, global_cdf)
    user, movie = keys // n_movies, keys % n_movies
    counts = np.bincount(user, minlength=n_users)
    # a random order inside each user (keys are sorted by movie): the order of the ratings
    shuffle = np.argsort(user + rng.random(user.size), kind="stable")
    user, movie = user[shuffle], movie[shuffle]
    rating = _ratings(rng, user, movie, fav, cluster)
    timestamp = _timestamps(rng, user, counts)
    year = np.clip(2019 - np.floor(rng.exponential(14.0, n_movies)), 1915, 2019).astype(np.int64)
    attr_movie, attr_kind, attr_value = _attributes(rng, cluster)
    return SyntheticArrays(user, movie, rating, timestamp, year, cluster,
                           attr_movie, attr_kind, attr_value, n_users, n_movies)


def to_dataset(arrays: SyntheticArrays, name: str = "synthetic") -> Dataset:
    """String ids as the loaders give them (``"1"``..; each id one shared ``str`` object)."""
    user_ids = np.asarray([str(i + 1) for i in range(arrays.n_users)], dtype=object)
    movie_ids = np.asarray([str(i + 1) for i in range(arrays.n_movies)], dtype=object)
    interactions = pd.DataFrame({
        "user_id": user_ids[arrays.user_idx],
        "movie_id": movie_ids[arrays.movie_idx],
        "rating": arrays.rating.astype(np.float32),
        "timestamp": arrays.timestamp.astype(np.int64),
    })
    movies = pd.DataFrame({
        "movie_id": movie_ids,
        "title": [f"Synthetic Movie {i + 1} ({y})" for i, y in enumerate(arrays.year.tolist())],
        "year": pd.array(arrays.year, dtype="Int64"),
    })
    kinds = np.asarray(["genre", "director", "writer", "actor"], dtype=object)
    genre_names = np.asarray(GENRES, dtype=object)
    is_genre = arrays.attr_kind == 0
    values = np.where(is_genre, genre_names[np.where(is_genre, arrays.attr_value, 0)],
                      np.char.add("Person ", arrays.attr_value.astype(str)).astype(object))
    attributes = pd.DataFrame({
        "movie_id": movie_ids[arrays.attr_movie],
        "kind": kinds[arrays.attr_kind],
        "value": values,
    })
    return Dataset(name, interactions, movies, attributes)


def describe(arrays: SyntheticArrays) -> dict[str, float | int]:
    """The figures that say the shape is realistic."""
    per_movie = np.sort(np.bincount(arrays.movie_idx, minlength=arrays.n_movies))[::-1]
    per_user = np.bincount(arrays.user_idx, minlength=arrays.n_users)
    order = np.lexsort((arrays.timestamp, arrays.user_idx))
    u, t = arrays.user_idx[order], arrays.timestamp[order]
    same = u[1:] == u[:-1]
    gaps = np.diff(t)[same]
    top = max(1, arrays.n_movies // 100)
    return {
        "interactions": int(arrays.user_idx.size),
        "users": int(arrays.n_users),
        "movies": int(arrays.n_movies),
        "top_1pct_movies_share": float(per_movie[:top].sum() / max(1, per_movie.sum())),
        "most_rated_movie_users_share": float(per_movie[0] / arrays.n_users),
        "movies_without_ratings": int((per_movie == 0).sum()),
        "ratings_per_user_median": float(np.median(per_user)),
        "ratings_per_user_max": int(per_user.max()),
        "mean_rating": float(arrays.rating.mean()),
        "consecutive_within_60s": float((gaps <= 60).mean()) if gaps.size else 0.0,
    }
