"""MovieLens 1M ``.dat`` files: ``::``-separated, no header, latin-1 movie titles."""

from __future__ import annotations

from pathlib import Path

from recsys_core.dataset import Dataset
from recsys_core.loaders._frames import (
    build_interactions,
    build_movies,
    build_users,
    concat_attributes,
    split_attribute,
    year_from_title,
)
from recsys_core.loaders._io import read_table, require_file

#: try UTF-8 first, then the encoding GroupLens documents for these files
ENCODINGS = ("utf-8", "latin-1")
RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
MOVIE_COLUMNS = ("movie_id", "title", "genres")
USER_COLUMNS = ("user_id", "gender", "age", "occupation", "zip_code")


def load_ml1m(directory: Path, name: str | None = None) -> Dataset:
    """Load ``ratings.dat``, ``movies.dat`` and (if present) ``users.dat``."""
    ratings_path = require_file(directory / "ratings.dat")
    ratings = read_table(
        ratings_path, sep="::", header=False, names=RATING_COLUMNS, encodings=ENCODINGS
    )
    interactions = build_interactions(ratings, ratings_path, RATING_COLUMNS)

    movies_path = require_file(directory / "movies.dat")
    frame = read_table(
        movies_path, sep="::", header=False, names=MOVIE_COLUMNS, dtype=str, encodings=ENCODINGS
    )
    titles = frame["title"].fillna("").str.strip()
    movies = build_movies(frame, movies_path, "movie_id", titles, year_from_title(titles))
    genres = split_attribute(movies["movie_id"], frame["genres"], "genre", "|")

    users = None
    users_path = directory / "users.dat"
    if users_path.exists():
        user_frame = read_table(
            users_path, sep="::", header=False, names=USER_COLUMNS, dtype=str, encodings=ENCODINGS
        )
        users = build_users(user_frame, users_path, {c: c for c in USER_COLUMNS})
    return Dataset(
        name=name or directory.name,
        interactions=interactions,
        movies=movies,
        attributes=concat_attributes([genres]),
        users=users,
    )
