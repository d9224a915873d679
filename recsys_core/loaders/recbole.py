"""RecBole atomic files: ``<name>.inter``, ``.item``, ``.user`` and the ``.link``/``.kg`` graph.

Headers are ``field:type`` and fields are tab-separated. People, languages and countries
come from the knowledge graph as Freebase ids (``m.0bln8``); the data holds no names.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsys_core.dataset import Dataset
from recsys_core.errors import DatasetNotFound
from recsys_core.loaders._frames import (
    attribute_rows,
    build_interactions,
    build_movies,
    build_users,
    concat_attributes,
    ids_to_str,
    require_present,
    split_attribute,
    year_from_text,
    year_from_title,
)
from recsys_core.loaders._io import read_table, require_columns, require_file

#: knowledge-graph relations whose head is the film and tail the attribute value
FILM_RELATIONS = {
    "film.film.actor": "actor",
    "film.film.directed_by": "director",
    "film.film.written_by": "writer",
    "film.film.produced_by": "producer",
    "film.film.language": "language",
    "film.film.country": "country",
}
#: inverse relations, whose tail is the film: they add people the forward edges may lack
PERSON_RELATIONS = {
    "film.actor.film": "actor",
    "film.director.film": "director",
    "film.writer.film": "writer",
    "film.producer.film": "producer",
}
_GENRE_PLACEHOLDERS = frozenset({"unknown"})


def read_atomic(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """An atomic file as strings, columns named without their ``:type`` suffix."""
    frame = read_table(path, sep="\t", header=True, dtype=str)
    frame.columns = [column.split(":", 1)[0].strip() for column in frame.columns]
    require_columns(frame, path, required)
    return frame


def atomic_stem(directory: Path) -> str:
    """The ``<name>`` shared by the atomic files in ``directory``."""
    stems = sorted(path.stem for path in directory.glob("*.inter"))
    if not stems:
        raise DatasetNotFound(f"no RecBole .inter file in {directory}")
    return directory.name if directory.name in stems else stems[0]


def load_recbole(directory: Path, name: str | None = None) -> Dataset:
    """Load a RecBole atomic dataset (ml-100k as RecBole ships it)."""
    stem = atomic_stem(directory)
    inter_path = directory / f"{stem}.inter"
    inter = read_atomic(inter_path, ("user_id", "item_id", "rating", "timestamp"))
    interactions = build_interactions(
        inter, inter_path, ("user_id", "item_id", "rating", "timestamp")
    )

    item_path = require_file(directory / f"{stem}.item")
    items = read_atomic(item_path, ("item_id", "movie_title"))
    title_years = year_from_title(items["movie_title"])
    if "release_year" in items.columns:
        years = year_from_text(items["release_year"]).fillna(title_years)
    else:
        years = title_years
    movies = build_movies(items, item_path, "item_id", items["movie_title"], years)

    attributes = []
    if "class" in items.columns:
        attributes.append(
            split_attribute(movies["movie_id"], items["class"], "genre", None, _GENRE_PLACEHOLDERS)
        )
    link_path, kg_path = directory / f"{stem}.link", directory / f"{stem}.kg"
    if link_path.exists() and kg_path.exists():
        attributes.extend(_graph_attributes(link_path, kg_path))

    users = None
    user_path = directory / f"{stem}.user"
    if user_path.exists():
        user_frame = read_atomic(user_path, ("user_id",))
        users = build_users(
            user_frame,
            user_path,
            {c: c for c in ("user_id", "age", "gender", "occupation", "zip_code")},
        )
    return Dataset(
        name=name or directory.name,
        interactions=interactions,
        movies=movies,
        attributes=concat_attributes(attributes),
        users=users,
    )


def _graph_attributes(link_path: Path, kg_path: Path) -> list[pd.DataFrame]:
    """People, languages and countries of each linked movie, one frame per kind."""
    links = read_atomic(link_path, ("item_id", "entity_id"))
    require_present(links, link_path, ("item_id", "entity_id"))
    entity_to_item = pd.DataFrame(
        {"entity": links["entity_id"].str.strip(), "movie_id": ids_to_str(links["item_id"])}
    )
    kg = read_atomic(kg_path, ("head_id", "relation_id", "tail_id"))
    require_present(kg, kg_path, ("head_id", "relation_id", "tail_id"))
    relations = kg["relation_id"].str.strip()

    forward = kg[relations.isin(list(FILM_RELATIONS))]
    forward = pd.DataFrame(
        {
            "entity": forward["head_id"].str.strip(),
            "kind": relations[forward.index].map(FILM_RELATIONS),
            "value": forward["tail_id"].str.strip(),
        }
    )
    inverse = kg[relations.isin(list(PERSON_RELATIONS))]
    inverse = pd.DataFrame(
        {
            "entity": inverse["tail_id"].str.strip(),
            "kind": relations[inverse.index].map(PERSON_RELATIONS),
            "value": inverse["head_id"].str.strip(),
        }
    )
    edges = pd.concat([forward, inverse], ignore_index=True).merge(entity_to_item, on="entity")
    return [
        attribute_rows(group["movie_id"], str(kind), group["value"])
        for kind, group in edges.groupby("kind", sort=False)
    ]
