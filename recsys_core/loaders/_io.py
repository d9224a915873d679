"""Reading delimited files into frames whose index is the 1-based file line number.

Every pandas, decoding or OS error is turned into a :class:`DataFormatError` (or
:class:`DatasetNotFound` for a missing file) that names the file and, where known, the line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from recsys_core.errors import DataFormatError, DatasetNotFound

_PANDAS_LINE = re.compile(r"line (\d+)")
_FIELD_COUNT = re.compile(r"Expected (?P<expected>\d+) fields in line \d+, saw (?P<saw>\d+)")
#: separator written in place of ``::`` so the C parser can read the ml-1m ``.dat`` files
_UNIT_SEPARATOR = "\x1f"


def require_file(path: Path) -> Path:
    """Return ``path`` if it is a non-empty file; raise otherwise."""
    if not path.is_file():
        raise DatasetNotFound(f"required file {path} is missing")
    if path.stat().st_size == 0:
        raise DataFormatError(path, "file is empty")
    return path


def first_undecodable_line(path: Path, encodings: Sequence[str]) -> int | None:
    """1-based number of the first line that none of ``encodings`` can decode."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not any(_decodes(raw, encoding) for encoding in encodings):
                return number
    return None


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _undecodable(path: Path, encodings: Sequence[str]) -> DataFormatError:
    tried = " or ".join(encodings)
    line = first_undecodable_line(path, encodings)
    return DataFormatError(path, f"bytes that cannot be decoded as {tried}", line=line)


def decode_file(path: Path, encodings: Sequence[str]) -> str:
    """The whole text of ``path``, decoded with the first encoding that works."""
    raw = path.read_bytes()
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise _undecodable(path, encodings)


def read_table(
    path: Path,
    *,
    sep: str,
    header: bool,
    names: Sequence[str] | None = None,
    dtype: type[str] | Mapping[str, type[str]] | None = None,
    encodings: Sequence[str] = ("utf-8",),
) -> pd.DataFrame:
    """Read a delimited file; the index of the result is the file line of each row.

    Only empty fields are missing values (a title "NA" stays a title). Blank lines are
    skipped. ``sep="::"`` is supported (the MovieLens ``.dat`` files).
    """
    require_file(path)
    if sep == "::":
        text = decode_file(path, encodings).replace("::", _UNIT_SEPARATOR)
        return _parse(path, io.StringIO(text), _UNIT_SEPARATOR, header, names, dtype, None)
    for encoding in encodings:
        try:
            return _parse(path, path, sep, header, names, dtype, encoding)
        except UnicodeDecodeError:
            continue
    raise _undecodable(path, encodings)


def _parse(
    path: Path,
    source: Path | io.StringIO,
    sep: str,
    header: bool,
    names: Sequence[str] | None,
    dtype: type[str] | Mapping[str, type[str]] | None,
    encoding: str | None,
) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            source,
            sep=sep,
            header=0 if header else None,
            names=list(names) if names is not None else None,
            dtype=dtype,
            encoding=encoding,
            quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            encoding_errors="strict",
        )
    except pd.errors.EmptyDataError:
        raise DataFormatError(path, "file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataFormatError(path, _pandas_message(exc), line=_pandas_line(exc)) from None
    except UnicodeDecodeError:
        raise
    except (ValueError, OverflowError) as exc:
        raise DataFormatError(path, _pandas_message(exc)) from None
    except OSError as exc:
        raise DataFormatError(path, f"cannot read: {exc.strerror or exc}") from None
    frame.index = pd.RangeIndex(len(frame)) + (2 if header else 1)
    if header:
        frame.columns = [str(column).strip() for column in frame.columns]
    filled = frame.notna().any(axis=1)
    return frame if bool(filled.all()) else frame[filled]


def _pandas_message(exc: Exception) -> str:
    text = str(exc).strip().replace("Error tokenizing data. C error: ", "")
    fields = _FIELD_COUNT.search(text)
    if fields:
        return f"wrong number of fields: expected {fields['expected']}, found {fields['saw']}"
    return _PANDAS_LINE.sub("", text).replace(" in ,", ",").replace("  ", " ").strip() or "bad row"


def _pandas_line(exc: Exception) -> int | None:
    match = _PANDAS_LINE.search(str(exc))
    return int(match.group(1)) if match else None


def require_columns(frame: pd.DataFrame, path: Path, required: Sequence[str]) -> None:
    """Raise naming the missing columns (reported on line 1, the header)."""
    missing = [column for column in required if column not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise DataFormatError(
            path, f"missing required column(s) {', '.join(missing)} (found: {found})", line=1
        )


def require_rows(frame: pd.DataFrame, path: Path, what: str) -> None:
    """Raise if ``frame`` holds no rows (a file with a header only)."""
    if frame.empty:
        raise DataFormatError(path, f"no {what}: the file holds a header only or blank lines")
