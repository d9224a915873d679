"""The social signal: what the people a user follows rated highly or watched lately.

A user's social inbox is a list of what their followees did: (followee, movie, what they
did, when). A rating counts by how far it is above 3 stars (5★ is 1, 4★ is 0.5, 3★ and
below nothing: a follow says "show me what they liked", not "what they saw"); a watch
counts by half its completion. Each entry fades with its age (half-life
``half_life_days``), and a followee counts once per movie (their newest entry). The score
of a movie is the sum over the followees who acted on it, so three friends' 5★ outweigh
one's.

:func:`social_reason` names them: "Ana and 2 others you follow rated this 5★".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
#: a watch counts as this share of a full-strength 5★ rating, times its completion
WATCH_STRENGTH = 0.5


@dataclass(frozen=True)
class Inbox:
    """What a user's followees did, one entry each (any order).

    ``rating`` is the stars given, or ``nan`` for a watch (then ``completion`` is its share
    watched). ``item_idx`` are model indexes; entries on movies the model does not know are
    left out by whoever builds the inbox."""

    followee: npt.NDArray[np.str_]
    item_idx: I64
    rating: F64
    completion: F64
    timestamp: F64

    def __len__(self) -> int:
        return int(self.item_idx.size)

    @classmethod
    def empty(cls) -> Inbox:
        return cls(np.zeros(0, dtype=str), np.zeros(0, dtype=np.int64), np.zeros(0),
                   np.zeros(0), np.zeros(0))

    @classmethod
    def of(cls, entries: list[tuple[str, int, float | None, float | None, float]]) -> Inbox:
        """From ``(followee, item_idx, rating or None, completion or None, timestamp)``."""
        if not entries:
            return cls.empty()
        followee, item, rating, completion, ts = zip(*entries, strict=True)
        return cls(
            np.asarray(followee, dtype=str),
            np.asarray(item, dtype=np.int64),
            np.asarray([np.nan if r is None else r for r in rating], dtype=np.float64),
            np.asarray([0.0 if c is None else c for c in completion], dtype=np.float64),
            np.asarray(ts, dtype=np.float64),
        )

    def strength(self) -> F64:
        """Each entry's weight before its age is counted."""
        rated = ~np.isnan(self.rating)
        out = np.where(rated, np.clip((np.nan_to_num(self.rating) - 3.0) / 2.0, 0.0, 1.0),
                       WATCH_STRENGTH * np.clip(self.completion, 0.0, 1.0))
        return out.astype(np.float64)

    def newest_per_pair(self) -> Inbox:
        """Each (followee, movie) once: its newest entry."""
        if len(self) < 2:
            return self
        order = np.lexsort((-self.timestamp, self.item_idx, self.followee))
        f, m = self.followee[order], self.item_idx[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = (f[1:] != f[:-1]) | (m[1:] != m[:-1])
        keep = order[first]
        return Inbox(self.followee[keep], self.item_idx[keep], self.rating[keep],
                     self.completion[keep], self.timestamp[keep])


def entry_weights(inbox: Inbox, now: float, half_life_days: float) -> F64:
    """Strength times the fade of age (entries stamped after ``now`` count as new)."""
    age = np.maximum(now - inbox.timestamp, 0.0) / 86_400.0
    fade = np.power(0.5, age / half_life_days) if half_life_days > 0 else np.ones(len(inbox))
    out: F64 = inbox.strength() * fade
    return out


def social_scores(inbox: Inbox, n_items: int, now: float,
                  half_life_days: float = 30.0) -> F64 | None:
    """Every movie's social score; None when the inbox holds nothing that counts."""
    inbox = inbox.newest_per_pair()
    if not len(inbox):
        return None
    w = entry_weights(inbox, now, half_life_days)
    if not (w > 0).any():
        return None
    out: F64 = np.bincount(inbox.item_idx, weights=w, minlength=n_items).astype(np.float64)
    return out


@dataclass(frozen=True)
class SocialSource:
    """Who you follow acted on a movie: the strongest first."""

    followees: tuple[str, ...]
    #: the strongest one's rating (None: they watched it)
    rating: float | None


def social_sources(inbox: Inbox, targets: I64, now: float,
                   half_life_days: float = 30.0) -> dict[int, SocialSource]:
    """For each target movie that followees acted on, who they are (strongest first)."""
    inbox = inbox.newest_per_pair()
    out: dict[int, SocialSource] = {}
    if not len(inbox):
        return out
    w = entry_weights(inbox, now, half_life_days)
    wanted = np.isin(inbox.item_idx, targets) & (w > 0)
    for m in np.unique(inbox.item_idx[wanted]).tolist():
        rows = np.flatnonzero(wanted & (inbox.item_idx == m))
        rows = rows[np.lexsort((inbox.followee[rows], -w[rows]))]
        top = float(inbox.rating[rows[0]])
        out[int(m)] = SocialSource(tuple(str(f) for f in inbox.followee[rows]),
                                   None if np.isnan(top) else top)
    return out


def _stars(rating: float) -> str:
    return f"{rating:g}★"


def social_reason(source: SocialSource, name: dict[str, str] | None = None) -> str:
    """"Ana and 2 others you follow rated this 5★" ("watched this" for a watch); followees
    are shown by ``name`` when given, else by their user id."""
    names = name or {}
    first = names.get(source.followees[0], f"user {source.followees[0]}")
    others = len(source.followees) - 1
    who = first if others == 0 else (
        f"{first} and {others} other{'s' if others > 1 else ''}")
    did = "watched this" if source.rating is None else f"rated this {_stars(source.rating)}"
    return f"{who} you follow {did}"
