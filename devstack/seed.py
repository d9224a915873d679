"""Seed users' state in Redis straight from a dataset, before the stream starts.

The stack trains version 1 on the oldest share of a dataset and replays the rest through
Kafka; the users of the trained share need their histories in Redis too, or the API would
know nothing about them. Going through Kafka would take minutes and put those events in the
event log, where the trainer would count them twice (it reads the base dataset already), so
they are applied directly with :meth:`UserStateStore.apply` and ``log=False``: the same Lua
merge, cap, seen set and dedupe as the stream, event ids as ``recsys replay`` makes them,
nothing appended to the event log. The rows are applied as ``recsys state rebuild`` applies
the base dataset (:mod:`training.rebuild`), positions in time order as source offsets, so
seeding again or rebuilding over a seeded store applies nothing twice; at the end the
store is marked built (a store that loses the marker is rebuilt).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from adapters.redis_store import UserStateStore
from adapters.replay import order_interactions
from streams.processor import ModelView, StreamProcessor
from training.rebuild import apply_base, mark_built
from training.registry import ModelRegistry

log = logging.getLogger(__name__)

#: events per pipeline round trip (one Lua call per user inside it)
SEED_BATCH = 5_000
#: users per vector refresh (one read and one write round trip each)
VECTOR_BATCH = 200


@dataclass(frozen=True)
class SeedResult:
    events: int
    applied: int
    users: int
    vectors: int
    seconds: float


def seed_interactions(
    store: UserStateStore,
    dataset_name: str,
    interactions: pd.DataFrame,
    *,
    batch: int = SEED_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, list[str]]:
    """Apply the rows as ratings in time order, without the event log, exactly as
    ``recsys state rebuild`` applies the base dataset (same event ids, same source
    positions: a row already applied is skipped); returns how many were applied and the
    users, in first-seen order."""
    rows = order_interactions(interactions)
    applied = apply_base(store, dataset_name, rows,
                         None if progress is None else lambda _p, d, t: progress(d, t), batch)
    return applied, list(dict.fromkeys(rows["user_id"].astype(str).tolist()))


def seed_vectors(store: UserStateStore, model_dir: Path, user_ids: list[str],
                 batch: int = VECTOR_BATCH) -> int:
    """Fold each user's seeded history into a vector of the current model version, as a
    stream worker does after a batch; how many vectors were written."""
    view = ModelView(ModelRegistry(model_dir).load())
    processor = StreamProcessor(store, lambda: view)
    return sum(processor.refresh_vectors(user_ids[i:i + batch])
               for i in range(0, len(user_ids), batch))


def seed_users(
    store: UserStateStore,
    dataset_name: str,
    interactions: pd.DataFrame,
    model_dir: Path | None,
    progress: Callable[[int, int], None] | None = None,
) -> SeedResult:
    """Histories of every user in ``interactions``, then their vectors (with a model)."""
    start = time.perf_counter()
    applied, users = seed_interactions(store, dataset_name, interactions, progress=progress)
    vectors = seed_vectors(store, model_dir, users) if model_dir is not None else 0
    mark_built(store, "seed", len(interactions), len(users))
    result = SeedResult(len(interactions), applied, len(users), vectors,
                        time.perf_counter() - start)
    log.info("seeded %d users from %d events (%d applied), %d vectors in %.1f s",
             result.users, result.events, result.applied, result.vectors, result.seconds)
    return result


def seed_follows(store: UserStateStore, dataset_name: str, interactions: pd.DataFrame,
                 batch: int = SEED_BATCH) -> int:
    """A synthetic follow graph over the seeded users (:func:`synthetic_follows`: MovieLens
    has none), applied as the stream applies follow events, so that the demo's "From people
    you follow" row has something to show; how many follows were applied. Applying it again
    changes nothing (the newest event of a pair wins)."""
    from adapters.follow_store import FollowChange, FollowStore
    from recsys_core.dataset import Dataset
    from recsys_core.follows import synthetic_follows

    empty = pd.DataFrame(columns=["movie_id", "title", "year"])
    graph = synthetic_follows(Dataset(dataset_name, interactions, empty))
    follows = FollowStore(store.r, store.keys)
    changes = [FollowChange(a, b, float(t), True)
               for a, b, t in graph.itertuples(index=False)]
    applied = 0
    for i in range(0, len(changes), batch):
        applied += sum(follows.apply(changes[i:i + batch]))
    log.info("seeded %d synthetic follows of %d users", applied, graph["follower"].nunique())
    return applied
