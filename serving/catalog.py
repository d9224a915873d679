"""Movies that arrived through catalog events after the served model was trained: known to
the API by their metadata alone, scored by content against the user's profile, so they can
be recommended before any retraining (the next model version takes them in fully)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import redis

from recsys_core.content import content_vector
from recsys_core.keys import Keys
from serving.model import ServingModel

log = logging.getLogger(__name__)

#: a new movie is offered only when its content matches the user this well (z-score over
#: the model's catalogue), and takes at most one slot in ten
MIN_CONTENT_Z = 2.0
SLOTS_PER_TEN = 1


@dataclass(frozen=True)
class NewMovies:
    """Catalog-only movies, content vectors computed with one model version."""

    version: int = 0
    movie_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    years: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    genres: list[list[str]] = field(default_factory=list)
    vectors: npt.NDArray[np.float32] = field(
        default_factory=lambda: np.zeros((0, 0), np.float32))

    def __len__(self) -> int:
        return len(self.movie_ids)


def tokens_of(fields: dict[bytes, bytes]) -> list[str]:
    """The content model's tokens from a stored catalog hash (as ``CatalogEvent.tokens``)."""
    genres = [g for g in fields.get(b"genres", b"").decode().split("|") if g]
    out = [f"genre={g}" for g in genres]
    for kind, names in json.loads(fields.get(b"people", b"{}")).items():
        out += [f"{kind}={n}" for n in names]
    out += [f"tag={t.strip().lower()}" for t in json.loads(fields.get(b"tags", b"[]"))]
    year = fields.get(b"year", b"").decode()
    if year:
        out.append(f"decade={int(year) // 10 * 10}")
    return out


def load_new_movies(client: redis.Redis, keys: Keys, model: ServingModel,
                    current: NewMovies | None = None) -> NewMovies:
    """Every catalog movie the model does not know, vectors under ``model``'s content basis;
    reuses ``current`` when nothing changed."""
    ids = sorted(m.decode() for m in client.smembers(keys.catalog_index()))
    new = [m for m in ids if model.bundle.movies.get(m) is None]
    if current is not None and current.version == model.version and current.movie_ids == new:
        return current
    pipe = client.pipeline(transaction=False)
    for m in new:
        pipe.hgetall(keys.catalog_movie(m))
    rows = pipe.execute() if new else []
    dim = model.bundle.content_vectors.shape[1]
    vectors = np.zeros((len(new), dim), np.float32)
    titles, years, genres = [], [], []
    for n, fields in enumerate(rows):
        vectors[n] = content_vector(model.bundle, tokens_of(fields))
        titles.append(fields.get(b"title", b"").decode())
        year = fields.get(b"year", b"").decode()
        years.append(int(year) if year else 0)
        genres.append([g for g in fields.get(b"genres", b"").decode().split("|") if g])
    if new:
        log.info("%d catalog movies outside model version %d are scored by content",
                 len(new), model.version)
    return NewMovies(model.version, new, titles, np.asarray(years, np.int32), genres, vectors)
