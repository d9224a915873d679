"""Turn raw frames (indexed by file line) into the columns of :class:`Dataset`.

Each check reports the first offending line; all work is vectorised.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_core.dataset import ATTRIBUTE_COLUMNS, ATTRIBUTE_KINDS, INTERACTION_COLUMNS
from recsys_core.errors import DataFormatError
from recsys_core.names import display_title

#: accepted rating range, wide enough for every MovieLens scale and for 0-10 scales
RATING_RANGE = (0.0, 10.0)
_YEAR_AT_END = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$")


def ids_to_str(values: pd.Series) -> pd.Series:
    """String ids; integer columns share one ``str`` object per distinct id."""
    if pd.api.types.is_integer_dtype(values.dtype):
        codes, uniques = pd.factorize(values)
        labels = np.asarray([str(u) for u in uniques], dtype=object)
        return pd.Series(labels[codes], index=values.index, dtype=object)
    return values.astype(str).str.strip().astype(object)


def _first_line(mask: pd.Series) -> int:
    return int(mask.index[int(np.argmax(mask.to_numpy()))])


def require_present(frame: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """Raise on the first row where one of ``columns`` is empty."""
    for column in columns:
        missing = frame[column].isna()
        if missing.any():
            raise DataFormatError(path, f"missing {column}", line=_first_line(missing))


def to_number(values: pd.Series, path: Path, what: str) -> pd.Series:
    """Float64 values; raise on the first value that is missing or not a finite number."""
    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype(str)  # "True" is not a rating
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.astype("float64")
    else:
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = pd.Series(~np.isfinite(numbers.to_numpy()), index=numbers.index)
    if bad.any():
        line = _first_line(bad)
        raw = values.loc[line]
        detail = f"missing {what}" if pd.isna(raw) else f"{what} {raw!r} is not a number"
        raise DataFormatError(path, detail, line=line)
    return numbers


def build_interactions(
    frame: pd.DataFrame,
    path: Path,
    columns: tuple[str, str, str, str],
    rating_range: tuple[float, float] = RATING_RANGE,
) -> pd.DataFrame:
    """Validate ``frame`` and return ``user_id, movie_id, rating, timestamp``.

    ``columns`` names the user, movie, rating and timestamp columns of ``frame``.
    """
    user_col, movie_col, rating_col, time_col = columns
    if frame.empty:
        raise DataFormatError(path, "no ratings: the file holds a header only or blank lines")
    require_present(frame, path, (user_col, movie_col))
    ratings = to_number(frame[rating_col], path, "rating")
    low, high = rating_range
    out_of_range = (ratings < low) | (ratings > high)
    if out_of_range.any():
        line = _first_line(out_of_range)
        raise DataFormatError(
            path, f"rating {ratings.loc[line]:g} out of range [{low:g}, {high:g}]", line=line
        )
    seconds = to_number(frame[time_col], path, "timestamp")
    too_big = seconds.abs() > 2**62
    if too_big.any():
        raise DataFormatError(path, "timestamp out of range", line=_first_line(too_big))
    timestamps = seconds.astype("int64")
    keys = pd.DataFrame({"u": frame[user_col], "m": frame[movie_col], "t": timestamps})
    duplicated = keys.duplicated()
    if duplicated.any():
        line = _first_line(duplicated)
        row = keys.loc[line]
        same = (keys["u"] == row["u"]) & (keys["m"] == row["m"]) & (keys["t"] == row["t"])
        raise DataFormatError(
            path,
            f"duplicate rating of movie {row['m']} by user {row['u']} at timestamp {row['t']}"
            f" (first on line {_first_line(same)})",
            line=line,
        )
    result = pd.DataFrame(
        {
            "user_id": ids_to_str(frame[user_col]),
            "movie_id": ids_to_str(frame[movie_col]),
            "rating": ratings.astype("float32"),
            "timestamp": timestamps,
        }
    )
    return result.reset_index(drop=True)[list(INTERACTION_COLUMNS)]


def year_from_title(titles: pd.Series) -> pd.Series:
    """The year in a trailing ``(YEAR)`` (or ``(YEAR-YEAR)``) of each title, ``Int64``."""
    found = titles.astype(str).str.extract(_YEAR_AT_END, expand=False)
    return pd.to_numeric(found, errors="coerce").astype("Int64")


def year_from_text(values: pd.Series) -> pd.Series:
    """A four-digit year anywhere in each value (``1995``, ``01-Jan-1995``), ``Int64``."""
    found = values.astype(str).str.extract(r"(?<!\d)(\d{4})(?!\d)", expand=False)
    return pd.to_numeric(found, errors="coerce").astype("Int64")


def build_movies(
    frame: pd.DataFrame, path: Path, id_col: str, titles: pd.Series, years: pd.Series
) -> pd.DataFrame:
    """``movie_id, title, year`` with ``" (YEAR)"`` appended where known and missing, titles
    as people write them (``The Godfather``, not ``Godfather, The``: names.display_title)."""
    if frame.empty:
        raise DataFormatError(path, "no movies: the file holds a header only or blank lines")
    require_present(frame, path, (id_col,))
    ids = ids_to_str(frame[id_col])
    duplicated = ids.duplicated()
    if duplicated.any():
        line = _first_line(duplicated)
        raise DataFormatError(path, f"duplicate movie id {ids.loc[line]}", line=line)
    clean = titles.fillna("").astype(str).str.strip().map(display_title)
    years = years.astype("Int64")
    needs_year = [
        not pd.isna(year) and f"({year}" not in title
        for title, year in zip(clean.tolist(), years.tolist(), strict=True)
    ]
    mask = pd.Series(needs_year, index=clean.index, dtype=bool)
    clean = clean.where(~mask, clean + " (" + years.astype(str) + ")")
    movies = pd.DataFrame({"movie_id": ids, "title": clean.astype(object), "year": years})
    return movies.reset_index(drop=True)


def split_attribute(
    movie_ids: pd.Series,
    values: pd.Series,
    kind: str,
    sep: str | None,
    ignore: Collection[str] = (),
) -> pd.DataFrame:
    """Long ``movie_id, kind, value`` rows from a separated list per movie (``None``: spaces)."""
    lists = values.fillna("").astype(str).str.split(sep)
    long = pd.DataFrame({"movie_id": movie_ids.to_numpy(), "value": lists.to_numpy()})
    long = long.explode("value")
    long["value"] = long["value"].astype(str).str.strip()
    long = long[(long["value"] != "") & ~long["value"].isin(ignore)]
    return attribute_rows(long["movie_id"], kind, long["value"])


def attribute_rows(movie_ids: pd.Series, kind: str, values: pd.Series) -> pd.DataFrame:
    """Deduplicated attribute rows of one kind."""
    if kind not in ATTRIBUTE_KINDS:
        raise ValueError(f"unknown attribute kind {kind!r}")
    rows = pd.DataFrame(
        {
            "movie_id": movie_ids.to_numpy(dtype=object),
            "kind": kind,
            "value": values.to_numpy(dtype=object),
        }
    )
    return rows.drop_duplicates(ignore_index=True)


def concat_attributes(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """One attribute table, ordered by kind as in :data:`ATTRIBUTE_KINDS`."""
    parts = [frame for frame in frames if not frame.empty]
    if not parts:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in ATTRIBUTE_COLUMNS})
    table = pd.concat(parts, ignore_index=True)
    order = {kind: rank for rank, kind in enumerate(ATTRIBUTE_KINDS)}
    ranks = table["kind"].map(order)
    table = table.iloc[np.argsort(ranks.to_numpy(), kind="stable")]
    return table.reset_index(drop=True)[list(ATTRIBUTE_COLUMNS)]


def build_users(frame: pd.DataFrame, path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Users table with ``user_id`` first; ``columns`` maps source names to ours."""
    present = {source: ours for source, ours in columns.items() if source in frame.columns}
    users = frame[list(present)].rename(columns=present)
    require_present(users, path, ("user_id",))
    users["user_id"] = ids_to_str(users["user_id"])
    if "age" in users.columns:
        users["age"] = pd.to_numeric(users["age"], errors="coerce").astype("Int64")
    return users.reset_index(drop=True)
