"""Train every model on a window of interactions and assemble one :class:`ModelBundle`."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import recsys_core
from recsys_core.activity import activity_arrays
from recsys_core.artifacts import STAGE_POPULARITY, ModelBundle
from recsys_core.confidence import ConfidenceRule
from recsys_core.dataset import Dataset
from recsys_core.errors import EmptyTrainingData
from recsys_core.foldin import gramian
from recsys_core.scoring import BlendWeights
from recsys_core.vocab import Vocabulary
from training.matrices import TrainingData, build_training_data
from training.models.als import AlsModel, fit_als
from training.models.content import fit_content_model, movie_tokens
from training.models.ease import fit_neighbors, session_baskets
from training.models.peers import fit_peer_sequences
from training.models.popularity import fit_popularity, fit_stage_popularity
from training.models.rating import RatingModel, fit_rating_model
from training.models.sequence import fit_sequence

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainParams:
    als_factors: int = 64
    als_regularization: float = 0.5
    als_iterations: int = 15
    als_cg_steps: int = 2
    confidence_alpha: float = 10.0
    ease_regularization: float = 500.0
    neighbors_top_n: int = 2000
    session_gap_seconds: float = 60.0
    session_regularization: float = 50.0
    content_dim: int = 64
    rating_factors: int = 32
    rating_regularization: float = 0.12
    rating_bias_regularization: float = 1.0
    rating_iterations: int = 8
    popularity_half_life_days: float | None = None
    sequence_decay: float = 0.8
    sequence_length: int = 20
    sequence_regularization: float = 1000.0
    sequence_max_items: int = 2000
    sequence_max_events: int = 500_000
    stage_per_octave: float = 2.0
    stage_smoothing: float = 2.0
    peers_max_users: int = 5000
    peers_max_per_user: int = 500
    peers_neighbours: int = 50
    peers_bandwidth: float = 10.0
    peers_norm_power: float = 0.3
    #: newest movies per user that scoring reads, as the stream keeps them in Redis
    #: (``RECSYS_USER_HISTORY_CAP``); exclusion still covers every movie seen
    history_cap: int = 500
    seed: int = 0

    @property
    def rule(self) -> ConfidenceRule:
        return ConfidenceRule(alpha=self.confidence_alpha)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainedModels:
    """The bundle plus the per-user parts that only offline evaluation needs."""

    bundle: ModelBundle
    data: TrainingData
    als: AlsModel
    rating: RatingModel
    timings: dict[str, float] = field(default_factory=dict)


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent, check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"{recsys_core.__version__}+{out.stdout.strip()}"
    except OSError:
        pass
    return recsys_core.__version__


def movie_vocabulary(dataset: Dataset, interactions: pd.DataFrame) -> Vocabulary:
    """Every catalogue movie, then movies seen only in interactions, so that movies without
    interactions stay reachable through content."""
    ids = list(dict.fromkeys(dataset.movies["movie_id"].astype(str)))
    known = set(ids)
    seen = pd.Series(pd.unique(interactions["movie_id"])).astype(str)  # not 10M str() calls
    ids += sorted(set(seen) - known)
    return Vocabulary(ids, kind="movie")


@contextmanager
def _phase(name: str, timings: dict[str, float], progress: Progress | None) -> Iterator[None]:
    if progress:
        progress(name)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def _metadata(dataset: Dataset, movies: Vocabulary) -> dict[str, np.ndarray]:
    meta = dataset.movies.assign(movie_id=dataset.movies["movie_id"].astype(str))
    meta = meta.drop_duplicates("movie_id").set_index("movie_id").reindex(list(movies.ids))
    titles = meta["title"].fillna("").astype(str).to_numpy()
    titles = np.where(titles == "", np.asarray(movies.ids, dtype=object), titles)
    years = meta["year"].astype("Float64").fillna(0).to_numpy(np.float64).astype(np.int32)
    attrs = dataset.attributes
    genres_by_movie: dict[str, list[str]] = {}
    people: list[list[str]] = [[] for _ in range(len(movies))]
    if len(attrs):
        g = attrs[attrs["kind"] == "genre"]
        for mid, vals in g.groupby("movie_id")["value"]:
            genres_by_movie[str(mid)] = list(vals)
        idx = movies.indices(attrs["movie_id"].astype(str), on_missing="minus_one")
        for i, kind, value in zip(idx, attrs["kind"], attrs["value"], strict=True):
            if i >= 0 and kind != "tag":
                people[int(i)].append(f"{kind}={value}")
    genres = np.asarray(["|".join(genres_by_movie.get(m, [])) for m in movies.ids], dtype=np.str_)
    indptr = np.cumsum([0] + [len(p) for p in people]).astype(np.int64)
    flat = [v for p in people for v in p]
    return {
        "titles": np.asarray(titles, dtype=np.str_),
        "years": years,
        "genres": genres,
        "attr_indptr": indptr,
        "attr_values": np.asarray(flat if flat else [""], dtype=np.str_)[: len(flat)],
    }


def train_models(
    dataset: Dataset,
    params: TrainParams | None = None,
    weights: BlendWeights | None = None,
    version: int = 1,
    interactions: pd.DataFrame | None = None,
    progress: Progress | None = None,
    surfaces: dict[str, dict[str, Any]] | None = None,
    default_surface: str | None = None,
) -> TrainedModels:
    """Fit ALS, the neighbour model, content vectors, popularity and the rating model.
    ``weights`` are the manifest's ``blend_weights`` (the ``up_next`` surface's);
    ``surfaces`` (:meth:`training.weights.SurfaceFit.manifest`) and ``default_surface``
    go into the manifest as they are.

    BLAS runs single-threaded: the many small solves here slow down badly when its threads
    compete with each other (and with the stream and API on the same cores)."""
    with threadpool_limits(1, "blas"):
        models = _train_models(dataset, params, weights, version, interactions, progress)
    if surfaces is not None:
        models.bundle.manifest["surfaces"] = surfaces
    if default_surface is not None:
        models.bundle.manifest["default_surface"] = default_surface
    return models


def _train_models(
    dataset: Dataset,
    params: TrainParams | None,
    weights: BlendWeights | None,
    version: int,
    interactions: pd.DataFrame | None,
    progress: Progress | None,
) -> TrainedModels:
    params = params or TrainParams()
    weights = weights or BlendWeights()
    inter = dataset.interactions if interactions is None else interactions
    if len(inter) == 0:
        raise EmptyTrainingData("no interactions in the training window")
    timings: dict[str, float] = {}
    with _phase("prepare", timings, progress):
        movies = movie_vocabulary(dataset, inter)
        data = build_training_data(inter, movies, params.rule)
        meta = _metadata(dataset, movies)
    with _phase("als", timings, progress):
        als = fit_als(
            data.confidence, params.als_factors, params.als_regularization,
            params.als_iterations, params.seed, params.als_cg_steps,
        )
    with _phase("neighbors", timings, progress):
        neighbors = fit_neighbors(data.binary, params.ease_regularization, params.neighbors_top_n)
        event_users = data.users.indices(inter["user_id"].astype(str))
        event_movies = movies.indices(inter["movie_id"].astype(str))
        event_times = inter["timestamp"].to_numpy(np.float64)
        baskets = session_baskets(
            event_users, event_movies, event_times, len(movies), params.session_gap_seconds,
        )
        session = fit_neighbors(baskets, params.session_regularization, params.neighbors_top_n)
    with _phase("sequence", timings, progress):
        # events in their recorded order: within a second it is the only order there is
        sequence = fit_sequence(
            event_users, event_movies, event_times, len(movies), params.sequence_decay,
            params.sequence_length, params.sequence_regularization, params.neighbors_top_n,
            params.sequence_max_items, max_events=params.sequence_max_events,
        )
        peers = fit_peer_sequences(event_users, event_movies, event_times, len(movies),
                                   params.peers_max_users, params.peers_max_per_user)
    with _phase("content", timings, progress):
        tokens = movie_tokens(movies, dataset.attributes, meta["years"])
        content = fit_content_model(tokens, params.content_dim, seed=params.seed)
    with _phase("popularity", timings, progress):
        popularity = fit_popularity(
            data.pairs["movie_idx"].to_numpy(), data.pairs["timestamp"].to_numpy(np.float64),
            len(movies), params.popularity_half_life_days,
        )
        stage = fit_stage_popularity(
            data.pairs["user_idx"].to_numpy(np.int64), data.pairs["movie_idx"].to_numpy(np.int64),
            data.pairs["timestamp"].to_numpy(np.float64), len(movies), params.stage_per_octave,
            params.stage_smoothing,
        )
    with _phase("rating", timings, progress):
        rating = fit_rating_model(
            data.ratings, params.rating_factors, params.rating_regularization,
            params.rating_bias_regularization, params.rating_iterations, params.seed,
        )
    ts = inter["timestamp"]
    manifest: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(),
        "dataset": dataset.name,
        "code_version": code_version(),
        "params": {
            **params.to_dict(),
            "als_regularization": als.regularization,
            "rating_global_mean": rating.global_mean,
            "neighbors_method": neighbors.method,
        },
        "confidence_rule": params.rule.to_dict(),
        "blend_weights": weights.to_dict(),
        "data_window": {
            "from_timestamp": int(ts.min()),
            "to_timestamp": int(ts.max()),
            "interactions": len(inter),
            "users": len(data.users),
            "movies": len(movies),
        },
        "metrics": {},
    }
    bundle = ModelBundle(
        version=version,
        movies=movies,
        titles=meta["titles"],
        years=meta["years"],
        genres=meta["genres"],
        item_factors=als.item_factors,
        yty=gramian(als.item_factors),
        popularity=popularity,
        content_vectors=content.vectors,
        neighbor_indptr=neighbors.indptr,
        neighbor_indices=neighbors.indices,
        neighbor_scores=neighbors.scores,
        session_indptr=session.indptr,
        session_indices=session.indices,
        session_scores=session.scores,
        rating_item_bias=rating.item_bias,
        rating_item_factors=rating.item_factors,
        manifest=manifest,
        extra={
            "attr_indptr": meta["attr_indptr"],
            "attr_values": meta["attr_values"],
            "content_tokens": content.tokens,
            "content_idf": content.idf,
            "content_token_weights": content.token_weights,
            "content_components": content.components,
            "sequence_indptr": sequence.indptr,
            "sequence_indices": sequence.indices,
            "sequence_scores": sequence.scores,
            STAGE_POPULARITY: stage,
            **peers,
            **activity_arrays(event_movies, event_times, len(movies)),
        },
    )
    timings["total"] = sum(timings.values())
    return TrainedModels(bundle, data, als, rating, timings)
