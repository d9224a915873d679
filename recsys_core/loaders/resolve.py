"""Find a dataset by name or path and pick its loader from the files present."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from recsys_core.dataset import Dataset
from recsys_core.errors import DatasetNotFound
from recsys_core.loaders.grouplens import load_grouplens_csv
from recsys_core.loaders.imdb import imdb_dir, with_imdb_people
from recsys_core.loaders.ml1m import load_ml1m
from recsys_core.loaders.ml100k import load_ml100k
from recsys_core.loaders.recbole import load_recbole

DATA_DIR_ENV = "RECSYS_DATA_DIR"
KNOWN_DATASETS = ("ml-100k", "ml-latest-small", "ml-1m", "ml-25m", "ml-32m")

DatasetFormat = Literal["recbole", "grouplens-csv", "ml-1m-dat", "ml-100k-original"]
#: the file whose presence marks each format, in the order they are tried
FORMAT_MARKERS: tuple[tuple[DatasetFormat, str], ...] = (
    ("recbole", "*.inter"),
    ("grouplens-csv", "ratings.csv"),
    ("ml-1m-dat", "ratings.dat"),
    ("ml-100k-original", "u.data"),
)
LOADERS: dict[DatasetFormat, Callable[[Path, str | None], Dataset]] = {
    "recbole": load_recbole,
    "grouplens-csv": load_grouplens_csv,
    "ml-1m-dat": load_ml1m,
    "ml-100k-original": load_ml100k,
}


def default_data_dir() -> Path:
    """``$RECSYS_DATA_DIR`` if set, else ``./data``."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value) if value else Path("data")


def detect_format(directory: Path) -> DatasetFormat:
    """The format of the dataset files in ``directory``."""
    for fmt, marker in FORMAT_MARKERS:
        if any(directory.glob(marker)):
            return fmt
    looked_for = ", ".join(marker for _, marker in FORMAT_MARKERS)
    raise DatasetNotFound(f"no dataset files in {directory} (looked for {looked_for})")


def resolve_dataset_dir(name_or_path: str, data_dir: Path | None = None) -> Path:
    """The directory of a known dataset name under ``data_dir``, or of a path."""
    base = data_dir if data_dir is not None else default_data_dir()
    candidates = [base / name_or_path] if _is_plain_name(name_or_path) else []
    if name_or_path not in KNOWN_DATASETS or not candidates:
        candidates.append(Path(name_or_path).expanduser())
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = " or ".join(str(candidate.absolute()) for candidate in candidates)
    hint = (
        f"; run `recsys data fetch {name_or_path}` or set {DATA_DIR_ENV}"
        if name_or_path in KNOWN_DATASETS
        else f"; known names: {', '.join(KNOWN_DATASETS)}"
    )
    raise DatasetNotFound(f"dataset {name_or_path!r} not found: no directory at {looked}{hint}")


def _is_plain_name(value: str) -> bool:
    return bool(value) and "/" not in value and os.sep not in value and value not in {".", ".."}


def load_dataset(name_or_path: str, data_dir: Path | None = None) -> Dataset:
    """Load a dataset by known name (under ``data_dir``) or directory path; with IMDb's
    files at hand (``$RECSYS_IMDB_DIR`` or ``<data_dir>/imdb``), its people are IMDb's,
    named (:mod:`recsys_core.loaders.imdb`)."""
    directory = resolve_dataset_dir(name_or_path, data_dir)
    name = name_or_path if name_or_path in KNOWN_DATASETS else directory.resolve().name
    dataset = LOADERS[detect_format(directory)](directory, name)
    people_dir = imdb_dir(data_dir if data_dir is not None else default_data_dir())
    return with_imdb_people(dataset, people_dir) if people_dir is not None else dataset
