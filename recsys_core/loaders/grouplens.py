"""GroupLens CSV releases (ml-latest-small, ml-latest, ml-25m, ml-32m).

``ratings.csv`` and ``movies.csv`` are required; ``tags.csv`` becomes ``tag`` attributes
(lowercased, stripped, one per movie and value) and ``links.csv`` the IMDb/TMDb links.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsys_core.dataset import Dataset
from recsys_core.loaders._frames import (
    attribute_rows,
    build_interactions,
    build_movies,
    concat_attributes,
    ids_to_str,
    require_present,
    split_attribute,
    year_from_title,
)
from recsys_core.loaders._io import read_table, require_columns, require_file

NO_GENRES = "(no genres listed)"
_ENCODINGS = ("utf-8",)


def load_grouplens_csv(directory: Path, name: str | None = None) -> Dataset:
    """Load a GroupLens CSV directory."""
    ratings_path = require_file(directory / "ratings.csv")
    ratings = read_table(
        ratings_path,
        sep=",",
        header=True,
        encodings=_ENCODINGS,
    )
    columns = ("userId", "movieId", "rating", "timestamp")
    require_columns(ratings, ratings_path, columns)
    interactions = build_interactions(ratings, ratings_path, columns)

    movies_path = require_file(directory / "movies.csv")
    movie_frame = read_table(movies_path, sep=",", header=True, dtype=str, encodings=_ENCODINGS)
    require_columns(movie_frame, movies_path, ("movieId", "title"))
    titles = movie_frame["title"].fillna("").str.strip()
    movies = build_movies(movie_frame, movies_path, "movieId", titles, year_from_title(titles))

    attributes = []
    if "genres" in movie_frame.columns:
        attributes.append(
            split_attribute(movies["movie_id"], movie_frame["genres"], "genre", "|", {NO_GENRES})
        )
    tags_path = directory / "tags.csv"
    if tags_path.exists():
        attributes.append(_tags(tags_path))
    links_path = directory / "links.csv"
    links = _links(links_path) if links_path.exists() else None
    return Dataset(
        name=name or directory.name,
        interactions=interactions,
        movies=movies,
        attributes=concat_attributes(attributes),
        links=links,
    )


def _tags(path: Path) -> pd.DataFrame:
    frame = read_table(require_file(path), sep=",", header=True, dtype=str, encodings=_ENCODINGS)
    require_columns(frame, path, ("movieId", "tag"))
    require_present(frame, path, ("movieId",))
    tags = frame["tag"].fillna("").str.strip().str.lower()
    keep = tags != ""
    return attribute_rows(frame.loc[keep, "movieId"].str.strip(), "tag", tags[keep])


def _links(path: Path) -> pd.DataFrame:
    frame = read_table(require_file(path), sep=",", header=True, dtype=str, encodings=_ENCODINGS)
    require_columns(frame, path, ("movieId", "imdbId", "tmdbId"))
    require_present(frame, path, ("movieId",))
    links = pd.DataFrame(
        {
            "movie_id": ids_to_str(frame["movieId"].str.strip()),
            "imdb_id": frame["imdbId"].str.strip(),
            "tmdb_id": frame["tmdbId"].str.strip(),
        }
    ).astype(object)
    return links.where(links.notna(), None).reset_index(drop=True)
