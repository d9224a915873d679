"""The trainer's reranker stage: log the cases of the events since the last run, as the
model then serving saw them, and refit the reranker on the newest cases when due.

The case log lives beside the versions (``<model_dir>/rerank_cases.npz``) with the time
its newest case is from. Each run replays the events after that time against the current
(serving) version (:class:`training.evaluation.live.LiveReplay` with that bundle), adds
their cases, and then either refits the trees (every ``every`` new events, once there are
``min_cases``) or carries the current version's trees over into the new bundle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from recsys_core.artifacts import ModelBundle
from recsys_core.dataset import Dataset
from recsys_core.errors import ModelNotLoaded, RecsysError
from recsys_core.rerank import Trees
from recsys_core.scoring import BlendWeights
from training.evaluation.live import LiveReplay
from training.pipeline import TrainParams
from training.registry import ModelRegistry
from training.rerank import DEFAULT_WINDOW, CaseLog, attach_trees, fit_trees

log = logging.getLogger(__name__)

CASES_FILE = "rerank_cases.npz"


@dataclass(frozen=True)
class RerankOutcome:
    #: cases logged by this run
    new_cases: int
    cases: int
    refitted: bool
    has_trees: bool


def update_reranker(
    dataset: Dataset,
    params: TrainParams,
    registry: ModelRegistry,
    bundle: ModelBundle,
    every: int = 5000,
    min_cases: int = 2000,
    window: int = DEFAULT_WINDOW,
    max_new: int = 5000,
) -> RerankOutcome:
    """Log the new events' cases against the serving version and give ``bundle`` trees
    (refitted or carried over); nothing to do before a version serves. Of more than
    ``max_new`` new events only the newest ``max_new`` are scored (the others are applied
    to the histories only), which bounds the stage's time."""
    try:
        serving = registry.load()
    except (ModelNotLoaded, RecsysError):
        return RerankOutcome(0, 0, False, False)
    path = registry.root / CASES_FILE
    cases, meta = CaseLog.load(path, window, params.seed)
    window_end = serving.manifest.get("data_window", {}).get("to_timestamp")
    through = meta.get("through", float(window_end) if window_end is not None else float("inf"))
    pending = int(meta.get("since_fit", 0))
    inter = dataset.interactions
    newer = inter["timestamp"] > through
    events = inter[newer]
    trees = Trees.from_bundle(serving)
    if len(events):
        weights = BlendWeights.from_dict(serving.manifest.get("blend_weights", {}))
        replay = LiveReplay(dataset, params, weights, inter[~newer], retrain_every=0,
                            rerank_every=0, cases=cases, bundle=serving, trees=trees)
        columns = list(inter.columns)
        first_scored = len(events) - max_new
        for n, row in enumerate(events.itertuples(index=False, name=None)):
            replay.step(row, columns, score=n >= first_scored)
        through = float(pd.to_numeric(events["timestamp"]).max())
        pending += len(events)
    refit = len(cases) >= min_cases and (trees is None or pending >= every)
    if refit:
        x, y = cases.arrays()
        trees = fit_trees(x, y, seed=params.seed)
        pending = 0
        log.info("reranker refitted on %d cases", len(cases))
    attach_trees(bundle, trees, len(cases))
    cases.save(path, through=through, since_fit=pending)
    return RerankOutcome(min(len(events), max_new), len(cases), refit, trees is not None)
