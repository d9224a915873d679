"""The stream's work on a batch of follow events (``follows.v1``): validate, apply to the
followers' follow hashes and the followees' follower sets (:class:`FollowStore`), and fill
the new followers' inboxes; and, for every batch of ratings and watches, the fan-out of
those events into the actors' followers' inboxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.follow_store import Activity, FollowChange, FollowStore
from recsys_core.errors import InvalidEvent
from recsys_core.events import FollowEvent, parse_event


def apply_follows(store: FollowStore, values: Sequence[bytes | None]
                  ) -> tuple[list[str], list[tuple[int, InvalidEvent]]]:
    """Each value's outcome (``applied``, or ``duplicate``: it changed nothing, having been
    applied before or being older than the pair's newest event), and the invalid ones
    (position, error)."""
    outcomes = ["invalid"] * len(values)
    invalid: list[tuple[int, InvalidEvent]] = []
    changes: list[FollowChange] = []
    positions: list[int] = []
    for n, raw in enumerate(values):
        try:
            event = parse_event("follow", raw)
        except InvalidEvent as exc:
            invalid.append((n, exc))
            continue
        assert isinstance(event, FollowEvent)
        changes.append(FollowChange(event.user_id, event.followee_id, event.timestamp,
                                    event.action == "follow"))
        positions.append(n)
    for n, changed in zip(positions, store.apply(changes), strict=True):
        outcomes[n] = "applied" if changed else "duplicate"
    return outcomes, invalid


def fan_out(store: FollowStore, interactions: Sequence[Any]) -> int:
    """Send valid ratings and watches (``Interaction``s, whatever their outcome: writing an
    inbox entry twice is a no-op) to the actors' followers' inboxes."""
    return store.fan_out([Activity(it.user_id, it.movie_id, it.timestamp, it.rating,
                                   it.completion) for it in interactions])
