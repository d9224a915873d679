"""The one in-memory shape every loader produces.

Raw ids are strings. ``interactions`` holds explicit ratings (and, from the stream, watch
completions) with UTC timestamps in seconds; ``attributes`` is a long table of movie
metadata used by the content model and by explanations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

INTERACTION_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
MOVIE_COLUMNS = ("movie_id", "title", "year")
ATTRIBUTE_COLUMNS = ("movie_id", "kind", "value")
#: kinds of attribute rows; people first, then descriptive ones
ATTRIBUTE_KINDS = (
    "genre", "actor", "director", "writer", "producer", "language", "country", "tag",
)


@dataclass(frozen=True)
class Dataset:
    """A MovieLens-shaped dataset.

    - ``interactions``: ``user_id`` (str), ``movie_id`` (str), ``rating`` (float32),
      ``timestamp`` (int64, seconds since the epoch, UTC); one row per rating event.
    - ``movies``: ``movie_id`` (str, unique), ``title`` (str, with the year in parentheses
      when known), ``year`` (pandas ``Int64``, nullable).
    - ``attributes``: ``movie_id``, ``kind`` (one of :data:`ATTRIBUTE_KINDS`), ``value`` (str);
      genres, people (actors, directors, writers, producers), languages, countries, tags.
    - ``users``: optional demographics keyed by ``user_id``.
    - ``links``: optional ``movie_id``, ``imdb_id``, ``tmdb_id``.
    """

    name: str
    interactions: pd.DataFrame
    movies: pd.DataFrame
    attributes: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(ATTRIBUTE_COLUMNS))
    )
    users: pd.DataFrame | None = None
    links: pd.DataFrame | None = None

    @property
    def n_users(self) -> int:
        return int(self.interactions["user_id"].nunique())

    @property
    def n_movies(self) -> int:
        return len(self.movies)

    def summary(self) -> dict[str, int | str]:
        return {
            "name": self.name,
            "users": self.n_users,
            "movies": self.n_movies,
            "interactions": len(self.interactions),
            "attributes": len(self.attributes),
        }
