"""Summary numbers of a loaded dataset, for ``recsys data info`` and logs."""

from __future__ import annotations

from dataclasses import dataclass

from recsys_core.dataset import ATTRIBUTE_KINDS, Dataset


@dataclass(frozen=True)
class DatasetStats:
    """Counts and ranges of one dataset; ranges are ``None`` when there are no ratings."""

    name: str
    users: int
    movies: int
    interactions: int
    rating_min: float | None
    rating_max: float | None
    first_timestamp: int | None
    last_timestamp: int | None
    #: attribute rows per kind, in :data:`ATTRIBUTE_KINDS` order, kinds with rows only
    attributes: dict[str, int]
    #: distinct movies having at least one attribute of each kind
    movies_with: dict[str, int]


def describe_dataset(dataset: Dataset) -> DatasetStats:
    """Compute :class:`DatasetStats`."""
    inter = dataset.interactions
    empty = inter.empty
    by_kind = dataset.attributes.groupby("kind")["movie_id"]
    sizes = {str(kind): int(n) for kind, n in by_kind.size().items()}
    distinct = {str(kind): int(n) for kind, n in by_kind.nunique().items()}
    kinds = [kind for kind in ATTRIBUTE_KINDS if kind in sizes]
    return DatasetStats(
        name=dataset.name,
        users=dataset.n_users,
        movies=dataset.n_movies,
        interactions=len(inter),
        rating_min=None if empty else float(inter["rating"].min()),
        rating_max=None if empty else float(inter["rating"].max()),
        first_timestamp=None if empty else int(inter["timestamp"].min()),
        last_timestamp=None if empty else int(inter["timestamp"].max()),
        attributes={kind: sizes[kind] for kind in kinds},
        movies_with={kind: distinct[kind] for kind in kinds},
    )
