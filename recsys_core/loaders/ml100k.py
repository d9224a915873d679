"""The original MovieLens 100K files: ``u.data``, ``u.item`` and ``u.user``.

``u.item`` is pipe-separated latin-1 with 19 genre flags; the ``unknown`` flag means no genre.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsys_core.dataset import Dataset
from recsys_core.errors import DataFormatError
from recsys_core.loaders._frames import (
    attribute_rows,
    build_interactions,
    build_movies,
    build_users,
    concat_attributes,
    year_from_text,
    year_from_title,
)
from recsys_core.loaders._io import read_table, require_file

ENCODINGS = ("utf-8", "latin-1")
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
ITEM_COLUMNS = ("movie_id", "title", "release_date", "video_release_date", "imdb_url", *GENRES)
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")


def load_ml100k(directory: Path, name: str | None = None) -> Dataset:
    """Load the GroupLens ml-100k release."""
    data_path = require_file(directory / "u.data")
    ratings = read_table(
        data_path, sep="\t", header=False, names=RATING_COLUMNS, encodings=ENCODINGS
    )
    interactions = build_interactions(ratings, data_path, RATING_COLUMNS)

    item_path = require_file(directory / "u.item")
    items = read_table(
        item_path, sep="|", header=False, names=ITEM_COLUMNS, dtype=str, encodings=ENCODINGS
    )
    titles = items["title"].fillna("").str.strip()
    years = year_from_text(items["release_date"]).fillna(year_from_title(titles))
    movies = build_movies(items, item_path, "movie_id", titles, years)
    genres = _genres(items, item_path, movies["movie_id"])

    users = None
    user_path = directory / "u.user"
    if user_path.exists():
        user_frame = read_table(
            user_path, sep="|", header=False, names=USER_COLUMNS, dtype=str, encodings=ENCODINGS
        )
        users = build_users(user_frame, user_path, {c: c for c in USER_COLUMNS})
    return Dataset(
        name=name or directory.name,
        interactions=interactions,
        movies=movies,
        attributes=concat_attributes([genres]),
        users=users,
    )


def _genres(items: pd.DataFrame, path: Path, movie_ids: pd.Series) -> pd.DataFrame:
    """Genre rows from the 0/1 flag columns (``unknown`` excluded)."""
    flags = items[list(GENRES)].apply(lambda column: column.str.strip())
    bad = ~flags.isin(["0", "1"]).all(axis=1)
    if bad.any():
        line = int(bad.index[bad.to_numpy().argmax()])
        raise DataFormatError(path, "genre flags must be 0 or 1 (19 flag columns)", line=line)
    ids = pd.Series(movie_ids.to_numpy(), index=items.index)
    long = (flags.drop(columns=["unknown"]) == "1").stack()
    long = long[long]
    lines = long.index.get_level_values(0)
    names = pd.Series(long.index.get_level_values(1), dtype=object)
    return attribute_rows(ids.loc[lines].reset_index(drop=True), "genre", names)
