"""Id vocabularies: raw string ids at the edges, dense integer ``*_idx`` inside.

An index never leaves the vocabulary that made it; callers choose what a miss does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized
from itertools import repeat
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from recsys_core.errors import UnknownMovie, UnknownUser

OnMissing = Literal["raise", "drop", "minus_one"]
IdxArray = npt.NDArray[np.int64]
#: from this many ids on, :meth:`Vocabulary.indices` looks them up in one vectorised pass
BULK_LOOKUP = 10_000


class Vocabulary:
    """Maps raw ids (strings) to dense indexes ``0..n-1`` and back."""

    __slots__ = ("_ids", "_index", "_table", "kind")

    def __init__(self, ids: Iterable[str], kind: Literal["movie", "user"] = "movie") -> None:
        self._ids: tuple[str, ...] = tuple(str(i) for i in ids)
        self._index: dict[str, int] = {raw: idx for idx, raw in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            raise ValueError(f"duplicate ids in {kind} vocabulary")
        self.kind = kind
        self._table: Any = None  # a pandas Index over the ids, built on the first bulk lookup

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw_id: object) -> bool:
        return raw_id in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._ids == other._ids

    def __hash__(self) -> int:
        return hash(self._ids)

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    def _missing(self, raw_id: str) -> Exception:
        return UnknownMovie(raw_id) if self.kind == "movie" else UnknownUser(raw_id)

    def index(self, raw_id: str) -> int:
        """The index of one raw id; raises ``UnknownMovie``/``UnknownUser`` on a miss."""
        try:
            return self._index[raw_id]
        except KeyError:
            raise self._missing(raw_id) from None

    def get(self, raw_id: str) -> int | None:
        return self._index.get(raw_id)

    def indices(self, raw_ids: Iterable[str], on_missing: OnMissing = "raise") -> IdxArray:
        """Indexes of many raw ids; ``on_missing`` says whether a miss raises, is dropped
        or becomes -1 (which numpy would silently read as the last row: callers must mask)."""
        if isinstance(raw_ids, Sized) and len(raw_ids) >= BULK_LOOKUP:
            return self._bulk_indices(raw_ids, on_missing)
        ids = raw_ids if isinstance(raw_ids, list | tuple) else list(raw_ids)
        idx = np.fromiter(map(self._index.get, ids, repeat(-1)), dtype=np.int64,
                          count=len(ids))
        missing = idx < 0
        if on_missing != "minus_one" and missing.any():
            if on_missing == "raise":
                raise self._missing(ids[int(missing.argmax())])
            idx = idx[~missing]
        return idx

    def _bulk_indices(self, raw_ids: Iterable[str], on_missing: OnMissing) -> IdxArray:
        """:meth:`indices` through a pandas hash table (same equality as the dict): a Python
        loop over 10M ids takes seconds."""
        import pandas as pd

        if self._table is None:
            self._table = pd.Index(self._ids, dtype=object)
        values = raw_ids if isinstance(raw_ids, pd.Series | np.ndarray) else list(raw_ids)
        idx = np.asarray(self._table.get_indexer(np.asarray(values, dtype=object)), np.int64)
        missing = idx < 0
        if missing.any():
            if on_missing == "raise":
                raise self._missing(np.asarray(values, dtype=object)[missing.argmax()])
            if on_missing == "drop":
                idx = idx[~missing]
        return idx

    def raw(self, idx: int) -> str:
        if idx < 0 or idx >= len(self._ids):
            raise IndexError(f"{self.kind} index {idx} out of range 0..{len(self._ids) - 1}")
        return self._ids[idx]

    def raws(self, idxs: Sequence[int] | npt.NDArray[np.integer]) -> list[str]:
        return [self.raw(int(i)) for i in idxs]

    def to_array(self) -> npt.NDArray[np.str_]:
        return np.asarray(self._ids, dtype=np.str_)

    @classmethod
    def from_array(
        cls, arr: npt.NDArray[np.str_], kind: Literal["movie", "user"] = "movie"
    ) -> Vocabulary:
        return cls((str(x) for x in arr.tolist()), kind=kind)
