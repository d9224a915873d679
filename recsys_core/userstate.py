"""A user's live state as the stream keeps it, independent of where it is stored.

Each (user, movie) pair is one :class:`PairState`; merging two states is commutative,
associative and idempotent (latest rating by time, best completion, latest time), so
duplicated or reordered events end in the state in-order, once-only delivery gives.

One limit: a user's history keeps the ``cap`` most recent movies. When a movie has been
dropped for age and a late event for it arrives, the pair starts afresh from that event,
whereas a delivery order that brought the event before the drop would have merged it; the
two states differ only in that long-dropped pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recsys_core.artifacts import ModelBundle
from recsys_core.confidence import ConfidenceRule
from recsys_core.history import UserHistory
from recsys_core.sparse import row_positions

VECTOR_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class PairState:
    rating_at: float | None  # time of the rating kept
    rating: float | None
    completion: float | None
    last_at: float

    def pack(self) -> str:
        def f(x: float | None) -> str:
            return "" if x is None else repr(float(x))

        return "|".join((f(self.rating_at), f(self.rating), f(self.completion), f(self.last_at)))

    @classmethod
    def unpack(cls, text: str | bytes) -> PairState:
        s = text.decode() if isinstance(text, bytes) else text
        parts = s.split("|")
        if len(parts) != 4:
            raise ValueError(f"not a packed pair state: {s!r}")

        def g(x: str) -> float | None:
            return float(x) if x else None

        last = g(parts[3])
        return cls(g(parts[0]), g(parts[1]), g(parts[2]), 0.0 if last is None else last)

    def merge(self, other: PairState) -> PairState:
        rating_at, rating = self.rating_at, self.rating
        if other.rating is not None and (
            rating is None
            or (other.rating_at or 0.0, other.rating) > (rating_at or 0.0, rating)
        ):
            rating_at, rating = other.rating_at, other.rating
        completion = max(
            (c for c in (self.completion, other.completion) if c is not None), default=None
        )
        return PairState(rating_at, rating, completion, max(self.last_at, other.last_at))

    def confidence(self, rule: ConfidenceRule) -> float:
        return rule.combine(self.rating, self.completion)


@dataclass(frozen=True)
class PairTable:
    """Many packed pair states parsed at once: ``values[:, 0..3]`` are rating_at, rating,
    completion, last_at (NaN where absent; last_at 0.0), one row per movie id."""

    movie_ids: list[str]
    values: npt.NDArray[np.float64]

    @classmethod
    def from_packed(cls, packed: Mapping[str, str | bytes] | Mapping[bytes, bytes]
                    ) -> PairTable:
        if not packed:
            return cls([], np.zeros((0, 4)))
        keys: list[Any] = list(packed)
        vals: list[Any] = list(packed.values())
        ids: list[str] = ([m.decode() for m in keys] if isinstance(keys[0], bytes)
                          else [str(m) for m in keys])
        raw: list[bytes] = (vals if isinstance(vals[0], bytes)  # as Redis returns them
                            else [str(v).encode() for v in vals])
        bad = next((v for v in raw if v.count(b"|") != 3), None)
        if bad is not None:
            raise ValueError(f"not a packed pair state: {bad!r}")
        nan = float("nan")  # float() per field: faster than numpy's bytes-to-float cast
        fields = [float(f) if f else nan for f in b"|".join(raw).split(b"|")]
        values = np.array(fields, dtype=np.float64).reshape(len(ids), 4)
        values[np.isnan(values[:, 3]), 3] = 0.0
        return cls(ids, values)

    @classmethod
    def from_pairs(cls, pairs: Mapping[str, PairState]) -> PairTable:
        return cls.from_packed({m: p.pack() for m, p in pairs.items()})

    def pairs(self) -> dict[str, PairState]:
        def g(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {m: PairState(g(r[0]), g(r[1]), g(r[2]), float(r[3]))
                for m, r in zip(self.movie_ids, self.values.tolist(), strict=True)}

    def __len__(self) -> int:
        return len(self.movie_ids)


def history_from_pairs(
    pairs: Mapping[str, PairState] | PairTable, bundle: ModelBundle, rule: ConfidenceRule
) -> tuple[UserHistory, int]:
    """The scorer's history over movies the model knows, and how many pairs it skipped."""
    table = pairs if isinstance(pairs, PairTable) else PairTable.from_pairs(pairs)
    idx = bundle.movies.indices(table.movie_ids, on_missing="minus_one")
    known = idx >= 0
    rows = table.values[known]
    item_idx = idx[known]
    r, c = rows[:, 1], rows[:, 2]
    strength = np.maximum(
        np.nan_to_num(rule.rating_strength(r), nan=0.0),
        rule.completion_strength(np.nan_to_num(c, nan=0.0)),
    )
    unknown = int((~known).sum())
    return UserHistory.build(item_idx, rule.confidence(strength), rows[:, 3], r), unknown


def encode_vector(vector: npt.NDArray[np.floating]) -> bytes:
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def decode_vector(raw: bytes, factors: int) -> npt.NDArray[np.float32] | None:
    """The stored vector, or None when it does not have ``factors`` entries."""
    if len(raw) != factors * VECTOR_DTYPE.itemsize:
        return None
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32)


@dataclass
class AffinityIndex:
    """Movies × content tokens (genres and people) for the user's affinity profile."""

    tokens: list[str]
    indptr: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int64]

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, kinds: Iterable[str] = (
            "genre", "director", "writer", "actor")) -> AffinityIndex:
        wanted = tuple(f"{k}=" for k in kinds)
        ptr = bundle.extra.get("attr_indptr")
        values = bundle.extra.get("attr_values")
        vocab: dict[str, int] = {}
        indptr = [0]
        indices: list[int] = []
        for m in range(bundle.n_items):
            if ptr is not None and values is not None:
                for v in values[int(ptr[m]) : int(ptr[m + 1])]:
                    token = str(v)
                    if token.startswith(wanted):
                        indices.append(vocab.setdefault(token, len(vocab)))
            indptr.append(len(indices))
        return cls(list(vocab), np.asarray(indptr, np.int64), np.asarray(indices, np.int64))

    def profile(
        self, history: UserHistory, half_life_days: float = 90.0, top: int = 20
    ) -> dict[str, float]:
        """Recency-decayed sums of liked movies' tokens, the strongest ``top`` kept, scaled so
        the first is 1. Decay is measured from the newest interaction, not the clock, so the
        profile depends on the history alone."""
        if len(history) == 0 or not self.tokens:
            return {}
        age_days = (history.timestamps.max() - history.timestamps) / 86400.0
        w = (history.confidence - 1.0) * np.power(0.5, age_days / half_life_days)
        flat, lengths = row_positions(self.indptr, history.item_idx)
        if flat.size == 0:
            return {}
        sums = np.bincount(self.indices[flat], weights=np.repeat(w, lengths),
                           minlength=len(self.tokens))
        # the strongest among the user's own tokens (a catalogue has tens of thousands, mostly
        # at zero, where a partition of all of them is slow); ties by lower token index
        order = np.flatnonzero(sums > 0)
        if order.size > top:
            kept = sums[order]
            order = order[kept >= kept[np.argpartition(-kept, top - 1)[top - 1]]]
        order = order[np.lexsort((order, -sums[order]))][:top]
        if order.size == 0:
            return {}
        scale = float(sums[order[0]])
        return {self.tokens[int(t)]: round(float(sums[t]) / scale, 4) for t in order}
