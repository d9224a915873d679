"""The confidence rule: how strongly an interaction says "this user likes this movie".

One rule, used by the trainer to build the ALS matrix, by the stream workers to fold in a
user's vector, and pinned by a test against ``implicit``'s own ``recalculate_user``.

For a (user, movie) pair the *strength* ``s`` in [0, 1] is the larger of
- the latest rating scaled to the rating range: ``rating / max_rating``;
- the largest watch completion seen: ``watched_seconds / duration_seconds``, clipped to 1.

The confidence is ``c = 1 + alpha * s``; pairs never interacted with have ``c = 1`` and
preference 0, as in Hu, Koren and Volinsky (2008). ``implicit`` is always given these
``c`` values directly with its own ``alpha`` left at 1.0, so the rule lives here only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ConfidenceRule:
    alpha: float = 10.0
    max_rating: float = 5.0
    #: watches shorter than this fraction of the movie carry no preference at all
    min_completion: float = 0.05

    def rating_strength(self, rating: float | FloatArray) -> FloatArray:
        r = np.asarray(rating, dtype=np.float64)
        return np.clip(r / self.max_rating, 0.0, 1.0)

    def completion_strength(self, completion: float | FloatArray) -> FloatArray:
        c = np.clip(np.asarray(completion, dtype=np.float64), 0.0, 1.0)
        return np.where(c < self.min_completion, 0.0, c)

    def confidence(self, strength: float | FloatArray) -> FloatArray:
        """``1 + alpha * s`` for strengths in [0, 1]."""
        return 1.0 + self.alpha * np.asarray(strength, dtype=np.float64)

    def from_ratings(self, rating: float | FloatArray) -> FloatArray:
        return self.confidence(self.rating_strength(rating))

    def from_watch(
        self, watched_seconds: float | FloatArray, duration_seconds: float | FloatArray
    ) -> FloatArray:
        w = np.asarray(watched_seconds, dtype=np.float64)
        d = np.asarray(duration_seconds, dtype=np.float64)
        completion = np.divide(w, d, out=np.zeros_like(w * d), where=d > 0)
        return self.confidence(self.completion_strength(completion))

    def combine(
        self, rating: float | None, completion: float | None
    ) -> float:
        """Confidence of one pair from its latest rating and its best watch completion."""
        s = 0.0
        if rating is not None:
            s = max(s, float(self.rating_strength(rating)))
        if completion is not None:
            s = max(s, float(self.completion_strength(completion)))
        return float(self.confidence(s))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceRule:
        return cls(**{k: float(v) for k, v in data.items() if k in cls.__dataclass_fields__})
