"""Small CSR helpers shared by the scorer and the user-state code."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def row_positions(
    indptr: npt.NDArray[np.integer], rows: npt.NDArray[np.integer]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Positions in ``indices``/``data`` of every entry of the given rows, row after row,
    and each row's length, without a Python loop over rows."""
    starts = np.asarray(indptr[rows], dtype=np.int64)
    lengths = np.asarray(indptr[rows + 1], dtype=np.int64) - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(total, dtype=np.int64) + offsets, lengths
