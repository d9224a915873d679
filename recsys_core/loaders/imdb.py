"""People's names from IMDb's non-commercial datasets, joined through ``links.csv``.

IMDb publishes gzipped TSV files (https://datasets.imdbws.com/, personal and non-commercial
use; the README says how to download them):

- ``title.crew.tsv.gz``: ``tconst``, ``directors``, ``writers`` (comma-separated ``nconst``);
- ``title.principals.tsv.gz``: ``tconst``, ``ordering``, ``nconst``, ``category`` (actor,
  actress, producer, ...);
- ``name.basics.tsv.gz``: ``nconst``, ``primaryName``;
- ``title.basics.tsv.gz`` (optional): ``tconst``, ``startYear``: fills a movie's missing year.

GroupLens sets link each movie to IMDb (``links.csv``'s ``imdbId``, the number of
``tt0114709``). With the files in ``$RECSYS_IMDB_DIR`` (or an ``imdb/`` folder beside the
datasets), :func:`with_imdb_people` replaces a dataset's actors, directors, writers and
producers by IMDb's, named ("Ridley Scott", not ``nm0000631``), for the movies it links.
The real files are large (the principals about 700 MB gzipped): they are read in chunks and
only the rows of linked movies are kept.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from recsys_core.dataset import ATTRIBUTE_COLUMNS, Dataset
from recsys_core.errors import DataFormatError

IMDB_DIR_ENV = "RECSYS_IMDB_DIR"
CREW = "title.crew.tsv.gz"
PRINCIPALS = "title.principals.tsv.gz"
NAMES = "name.basics.tsv.gz"
BASICS = "title.basics.tsv.gz"
REQUIRED = (CREW, PRINCIPALS, NAMES)
#: the people kinds IMDb supplies (replaced wholesale for the movies it links)
PEOPLE_KINDS = ("actor", "director", "writer", "producer")
#: actors kept per movie, in billing order
ACTORS_PER_MOVIE = 8
_CHUNK = 500_000
_PRINCIPAL_KIND = {"actor": "actor", "actress": "actor", "producer": "producer"}


def imdb_dir(data_dir: Path | None = None) -> Path | None:
    """``$RECSYS_IMDB_DIR`` if set, else ``<data_dir>/imdb`` when it holds the files."""
    value = os.environ.get(IMDB_DIR_ENV, "").strip()
    if value:
        return Path(value)
    if data_dir is not None and all((data_dir / "imdb" / f).is_file() for f in REQUIRED):
        return data_dir / "imdb"
    return None


def tconst(imdb_id: str) -> str:
    """``links.csv``'s ``imdbId`` (``114709``) as IMDb's title id (``tt0114709``)."""
    digits = imdb_id.strip().removeprefix("tt")
    if not digits.isdigit():
        raise ValueError(f"not an IMDb id: {imdb_id!r}")
    return f"tt{int(digits):07d}"


def _chunks(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    try:
        yield from pd.read_csv(path, sep="\t", usecols=columns, dtype=str, na_values=["\\N"],
                               keep_default_na=False, quoting=csv.QUOTE_NONE,
                               chunksize=_CHUNK, compression="infer")
    except ValueError as exc:  # a missing column
        raise DataFormatError(path, str(exc)) from None


def load_imdb_people(directory: Path, links: pd.DataFrame) -> pd.DataFrame:
    """Attribute rows (``movie_id``, ``kind``, ``value``) of the linked movies' people, named.

    ``links`` has ``movie_id`` and ``imdb_id``; movies without a usable IMDb id are left out.
    A person whose name IMDb does not list is left out (never shown as an id)."""
    linked = links.dropna(subset=["imdb_id"])
    ids: dict[str, str] = {}
    for movie_id, raw in zip(linked["movie_id"], linked["imdb_id"], strict=True):
        try:
            ids[tconst(str(raw))] = str(movie_id)
        except ValueError:
            continue
    rows: list[pd.DataFrame] = []
    for chunk in _chunks(directory / CREW, ["tconst", "directors", "writers"]):
        chunk = chunk[chunk["tconst"].isin(ids)]
        for column, kind in (("directors", "director"), ("writers", "writer")):
            people = chunk[["tconst", column]].dropna()
            people = people.assign(nconst=people[column].str.split(",")).explode("nconst")
            rows.append(pd.DataFrame({"tconst": people["tconst"], "kind": kind,
                                      "nconst": people["nconst"], "order": 0}))
    for chunk in _chunks(directory / PRINCIPALS, ["tconst", "ordering", "nconst", "category"]):
        chunk = chunk[chunk["tconst"].isin(ids) & chunk["category"].isin(_PRINCIPAL_KIND)]
        rows.append(pd.DataFrame({"tconst": chunk["tconst"],
                                  "kind": chunk["category"].map(_PRINCIPAL_KIND),
                                  "nconst": chunk["nconst"],
                                  "order": pd.to_numeric(chunk["ordering"], errors="coerce")}))
    people = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["tconst", "kind", "nconst", "order"])
    people = people.dropna(subset=["nconst"])
    wanted = set(people["nconst"])
    names: dict[str, str] = {}
    for chunk in _chunks(directory / NAMES, ["nconst", "primaryName"]):
        chunk = chunk[chunk["nconst"].isin(wanted)].dropna()
        names.update(zip(chunk["nconst"], chunk["primaryName"].str.strip(), strict=True))
    people = people.assign(value=people["nconst"].map(names)).dropna(subset=["value"])
    people = people[people["value"] != ""]
    people = people.sort_values(["tconst", "kind", "order"], kind="stable")
    actors = people["kind"] == "actor"
    billed = people[actors].groupby("tconst").cumcount() < ACTORS_PER_MOVIE
    people = pd.concat([people[~actors], people[actors][billed]])
    out = pd.DataFrame({"movie_id": people["tconst"].map(ids), "kind": people["kind"],
                        "value": people["value"]})
    return out.drop_duplicates().reset_index(drop=True)[list(ATTRIBUTE_COLUMNS)]


def load_imdb_years(directory: Path, links: pd.DataFrame) -> dict[str, int]:
    """``movie_id`` → IMDb's start year, for the linked movies (empty without the file)."""
    path = directory / BASICS
    if not path.is_file():
        return {}
    ids = {}
    for movie_id, raw in zip(links["movie_id"], links["imdb_id"], strict=True):
        try:
            ids[tconst(str(raw))] = str(movie_id)
        except ValueError:
            continue
    years: dict[str, int] = {}
    for chunk in _chunks(path, ["tconst", "startYear"]):
        chunk = chunk[chunk["tconst"].isin(ids)].dropna()
        for t, y in zip(chunk["tconst"], chunk["startYear"], strict=True):
            if y.isdigit():
                years[ids[t]] = int(y)
    return years


def with_imdb_people(dataset: Dataset, directory: Path) -> Dataset:
    """``dataset`` with its people from IMDb for the movies ``links`` ties to it (their own
    people rows replaced; other movies keep theirs) and missing years filled."""
    if dataset.links is None or "imdb_id" not in dataset.links.columns:
        return dataset
    people = load_imdb_people(directory, dataset.links)
    covered = set(people["movie_id"])
    attrs = dataset.attributes
    keep = ~(attrs["kind"].isin(PEOPLE_KINDS) & attrs["movie_id"].isin(covered))
    attributes = pd.concat([attrs[keep], people], ignore_index=True)
    movies = dataset.movies
    years = load_imdb_years(directory, dataset.links)
    if years:
        filled = movies["movie_id"].map(years).astype("Int64")
        movies = movies.assign(year=movies["year"].fillna(filled))
    return Dataset(name=dataset.name, interactions=dataset.interactions, movies=movies,
                   attributes=attributes, users=dataset.users, links=dataset.links)
