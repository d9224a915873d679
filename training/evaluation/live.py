"""The live system in process, event by event: what protocol C scores as "the live system".

Before each event the user's top-10 is computed from the state so far (the blend's top
candidates reordered by the reranker when there is one); then the event is applied to the
user's history and to the movie activity. As in production, the models are retrained on
every event so far each ``retrain_every`` events (the periodic trainer) and the reranker
is refitted on the newest logged cases each ``rerank_every`` events, and kept only when
it beats the blend on the newest tenth of them (:func:`training.rerank.fit_checked`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from recsys_core.activity import MovieActivity, counted_since
from recsys_core.artifacts import ModelBundle
from recsys_core.dataset import Dataset
from recsys_core.history import UserHistory
from recsys_core.rerank import CANDIDATES, Trees, features, rerank
from recsys_core.scoring import (
    BlendWeights,
    component_scores,
    standardized,
    top_k,
    weighted,
)
from training.matrices import build_training_data
from training.pipeline import TrainParams, train_models
from training.rerank import CaseLog, RerankCheck, attach_trees, fit_checked
from training.weights import HistoryRows, apply_event, capped, history_of

K = 10


def seeded_activity(events: pd.DataFrame) -> MovieActivity:
    """The movie activity after ``events``: each movie's first time, then the last week's
    events in time order (older ones no longer count)."""
    activity = MovieActivity()
    if len(events) == 0:
        return activity
    mids = events["movie_id"].astype(str)
    ts = events["timestamp"].to_numpy(np.float64)
    first = pd.Series(ts, index=mids.to_numpy()).groupby(level=0).min()
    for mid, t in zip(first.index.tolist(), first.tolist(), strict=True):
        activity.seen(str(mid), float(t))
    recent = ts >= counted_since(float(ts.max()))
    order = np.argsort(ts[recent], kind="stable")
    for mid, t in zip(mids.to_numpy()[recent][order].tolist(), ts[recent][order].tolist(),
                      strict=True):
        activity.add(mid, t)
    return activity


class LiveReplay:
    def __init__(
        self,
        dataset: Dataset,
        params: TrainParams,
        weights: BlendWeights,
        prior: pd.DataFrame,
        retrain_every: int = 1000,
        rerank_every: int = 5000,
        cases: CaseLog | None = None,
        progress: Callable[[str], None] | None = None,
        bundle: ModelBundle | None = None,
        trees: Trees | None = None,
    ) -> None:
        """``prior``: the events already applied. Models are trained on them unless a
        ``bundle`` is given (then it serves until the first retraining)."""
        self.dataset, self.params, self.weights = dataset, params, weights
        self.history_cap: int | None = getattr(params, "history_cap", None)
        self.retrain_every, self.rerank_every = retrain_every, rerank_every
        self.cases = cases if cases is not None else CaseLog()
        self.progress = progress
        if bundle is None:
            models = train_models(dataset, params, weights, interactions=prior)
            bundle, data = models.bundle, models.data
        else:
            data = build_training_data(prior, bundle.movies, params.rule)
        self.bundle: ModelBundle = bundle
        self.histories: dict[str, HistoryRows] = {}
        for u, uid in enumerate(data.users.ids):
            h = data.history(u)
            self.histories[uid] = list(zip(h.item_idx.tolist(), h.confidence.tolist(),
                                           h.timestamps.tolist(), h.ratings.tolist(),
                                           strict=True))
        self.activity = seeded_activity(prior)
        self.applied: list[pd.DataFrame] = [prior]
        self.pending: list[tuple[object, ...]] = []
        self.events = 0
        self.trees = trees
        self.current = self.bundle
        self.remap: np.ndarray | None = None
        self.skipped = 0
        #: (events so far, held-out check) of each refit of the trees
        self.checks: list[tuple[int, RerankCheck | None]] = []
        #: called with the number of events so far whenever the serving model changes
        self.on_change: Callable[[int], None] | None = None

    def serving_bundle(self) -> ModelBundle:
        """The model serving now, with the reranker's trees attached (as a trainer would
        publish it)."""
        attach_trees(self.current, self.trees, len(self.cases))
        return self.current

    def serve(self, bundle: ModelBundle) -> None:
        """Serve ``bundle`` from the next event on, as the API does once a version is
        published: its blend weights (the default surface's) and its trees, if any."""
        self.current = bundle
        self.trees = Trees.from_bundle(bundle)
        self.weights = BlendWeights.from_dict(bundle.manifest.get("blend_weights", {}))
        same = list(bundle.movies.ids) == list(self.bundle.movies.ids)
        self.remap = None if same else bundle.movies.indices(self.bundle.movies.ids)

    def _maintain(self, columns: list[str]) -> None:
        if self.events == 0:
            return
        changed = False
        if self.retrain_every > 0 and self.events % self.retrain_every == 0:
            changed = True
            self.applied.append(pd.DataFrame(self.pending, columns=columns))
            self.pending = []
            self.applied = [pd.concat(self.applied, ignore_index=True)]
            if self.progress:
                self.progress(f"C: retraining after {self.events} replayed events")
            self.current = train_models(self.dataset, self.params, self.weights,
                                        interactions=self.applied[0]).bundle
            same = list(self.current.movies.ids) == list(self.bundle.movies.ids)
            self.remap = None if same else self.current.movies.indices(self.bundle.movies.ids)
        if self.rerank_every > 0 and self.events % self.rerank_every == 0 and len(self.cases):
            if self.progress:
                self.progress(f"C: refitting the reranker on {len(self.cases)} cases")
            # as the trainer does: kept only when they beat the blend on the newest cases
            self.trees, check = fit_checked(self.cases, seed=self.params.seed)
            self.checks.append((self.events, check))
            changed = True
        if changed and self.on_change is not None:
            self.on_change(self.events)

    def step(self, row: pd.Series | tuple[object, ...], columns: list[str],
             score: bool = True) -> tuple[int, int] | None:
        """Rank the event's movie for its user (blend rank, final rank; K when outside the
        top K), then apply it; None for a movie the model does not know, or when not
        asked to ``score`` (the event is only applied)."""
        self._maintain(columns)
        values = dict(zip(columns, row, strict=True))
        uid, mid = str(values["user_id"]), str(values["movie_id"])
        ts = float(values["timestamp"])  # type: ignore[arg-type]
        item = self.bundle.movies.get(mid)
        self.events += 1
        self.pending.append(tuple(row))
        if item is None:
            self.skipped += 1
            self.activity.add(mid, ts)
            return None
        rows = self.histories.setdefault(uid, [])
        rating = float(values["rating"])  # type: ignore[arg-type]
        if not score:
            self._apply(rows, item, mid, ts, rating)
            return None
        full = history_of(rows) if rows else UserHistory.empty()
        # scored over the newest ``history_cap`` movies, as the stream keeps them in Redis;
        # every movie seen is excluded
        history = capped(full, self.history_cap, self.bundle.movies)
        seen = full.item_idx
        if self.remap is not None:
            history = UserHistory(self.remap[history.item_idx], history.confidence,
                                  history.timestamps, history.ratings)
            seen = self.remap[seen]
            target = int(self.remap[item])
        else:
            target = item
        bundle = self.current
        z = standardized(component_scores(bundle, history, self.weights))
        scores = (weighted(z, self.weights)[0] if z
                  else bundle.popularity.astype(np.float64))
        cand, _ = top_k(scores, CANDIDATES, seen)
        x = features(bundle, z, scores, cand, history, self.activity)
        where = np.flatnonzero(cand == target)
        chosen = int(where[0]) if where.size else -1
        self.cases.add(x, chosen)
        blend_rank = chosen if 0 <= chosen < K else K
        final = blend_rank
        if self.trees is not None:
            order, _ = rerank(self.trees, bundle, z, scores, cand, history, self.activity,
                              x)
            at = np.flatnonzero(order[:K] == target)
            final = int(at[0]) if at.size else K
        self._apply(rows, item, mid, ts, rating)
        return blend_rank, final

    def _apply(self, rows: HistoryRows, item: int, mid: str, ts: float, rating: float) -> None:
        apply_event(rows, item, float(self.params.rule.from_ratings(rating)), ts, rating)
        self.activity.add(mid, ts)
