"""Dataset loaders: each returns one :class:`recsys_core.dataset.Dataset`.

``load_dataset`` resolves a name or path and detects the format; ``fetch_dataset``
downloads a GroupLens release.
"""

from recsys_core.loaders.fetch import FETCHABLE_DATASETS, GROUPLENS_BASE_URL, fetch_dataset
from recsys_core.loaders.grouplens import load_grouplens_csv
from recsys_core.loaders.ml1m import load_ml1m
from recsys_core.loaders.ml100k import load_ml100k
from recsys_core.loaders.recbole import load_recbole
from recsys_core.loaders.resolve import (
    DATA_DIR_ENV,
    KNOWN_DATASETS,
    DatasetFormat,
    default_data_dir,
    detect_format,
    load_dataset,
    resolve_dataset_dir,
)
from recsys_core.loaders.summary import DatasetStats, describe_dataset

__all__ = [
    "DATA_DIR_ENV",
    "FETCHABLE_DATASETS",
    "GROUPLENS_BASE_URL",
    "KNOWN_DATASETS",
    "DatasetFormat",
    "DatasetStats",
    "default_data_dir",
    "describe_dataset",
    "detect_format",
    "fetch_dataset",
    "load_dataset",
    "load_grouplens_csv",
    "load_ml100k",
    "load_ml1m",
    "load_recbole",
    "resolve_dataset_dir",
]
