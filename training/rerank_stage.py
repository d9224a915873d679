"""The trainer's reranker stage: log the cases of the events since the last run, as the
model then serving saw them, and refit the reranker on the newest cases when due.

The case log lives beside the versions (``<model_dir>/rerank_cases.npz``) with the time
its newest case is from. Each run replays the events after that time against the current
(serving) version (:class:`training.evaluation.live.LiveReplay` with that bundle), adds
their cases, and then either refits the trees (every ``every`` new events, once there are
``min_cases``) or carries the current version's trees over into the new bundle.

Trees are published only when they beat the blend on cases they were not fitted on
(:func:`training.rerank.fit_checked`): refitted trees on the newest tenth of the cases,
held out of their fitting; carried trees on the cases logged since they were fitted.
Otherwise the new version carries the blend alone. Either way the manifest's
``reranker`` entry records the decision and both figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from recsys_core.artifacts import ModelBundle
from recsys_core.dataset import Dataset
from recsys_core.errors import ModelNotLoaded, RecsysError
from recsys_core.rerank import Trees
from recsys_core.scoring import BlendWeights
from training.evaluation.live import LiveReplay
from training.pipeline import TrainParams
from training.registry import ModelRegistry
from training.rerank import (
    DEFAULT_WINDOW,
    MIN_HOLDOUT,
    CaseLog,
    RerankCheck,
    attach_trees,
    check_trees,
    fit_checked,
)

log = logging.getLogger(__name__)

CASES_FILE = "rerank_cases.npz"


@dataclass(frozen=True)
class RerankOutcome:
    #: cases logged by this run
    new_cases: int
    cases: int
    refitted: bool
    has_trees: bool
    #: what the manifest's ``reranker`` entry records
    record: dict[str, Any] = field(default_factory=dict)


def serving_weights(bundle: ModelBundle) -> BlendWeights:
    """The blend weights the serving version ranks its default surface with."""
    return BlendWeights.from_dict(bundle.manifest.get("blend_weights", {}))


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
    (refitted or carried over) when they beat the blend on cases they were not fitted
    on; nothing to do before a version serves. Of more than ``max_new`` new events only
    the newest ``max_new`` are scored (the others are applied to the histories only),
    which bounds the stage's time."""
    try:
        serving = registry.load()
    except (ModelNotLoaded, RecsysError):
        record = {"decision": "blend alone", "reason": "no serving version to log cases "
                  "against yet", "cases": 0}
        _attach(bundle, None, 0, record)
        return RerankOutcome(0, 0, False, False, record)
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
        replay = LiveReplay(dataset, params, serving_weights(serving), inter[~newer],
                            retrain_every=0, rerank_every=0, cases=cases, bundle=serving,
                            trees=trees)
        columns = list(inter.columns)
        first_scored = len(events) - max_new
        for n, row in enumerate(events.itertuples(index=False, name=None)):
            replay.step(row, columns, score=n >= first_scored)
        through = float(pd.to_numeric(events["timestamp"]).max())
        pending += min(len(events), max_new)
    check: RerankCheck | None = None
    carried_failed = False
    if trees is not None and min(pending, cases.full_cases) >= MIN_HOLDOUT:
        # the carried trees on every case logged since they were fitted
        check = check_trees(trees, cases.newest(pending))
        carried_failed = not check.better
    refit = len(cases) >= min_cases and (trees is None or pending >= every or carried_failed)
    if refit:
        trees, check = fit_checked(cases, seed=params.seed)
        pending = 0
        log.info("reranker refitted on %d cases: %s", len(cases),
                 check.to_dict() if check else "too few cases to hold out")
        record = _record(check, trees, len(cases), "refitted")
    elif trees is not None and carried_failed:
        record = _record(check, None, len(cases), "carried over")
        trees = None
    elif trees is not None:
        # carried over: its fitting check, and the check on the cases since, when any
        record = {**serving.manifest.get("reranker", {}), "carried_from": serving.version,
                  "cases": len(cases)}
        if check is not None:
            record["since_fit"] = check.to_dict()
    else:
        record = {"decision": "blend alone", "cases": len(cases),
                  "reason": f"{len(cases)} cases logged; the trees are fitted from "
                            f"{min_cases}"}
    _attach(bundle, trees, len(cases), record)
    cases.save(path, through=through, since_fit=pending)
    return RerankOutcome(min(len(events), max_new), len(cases), refit, trees is not None,
                         record)


def _record(check: RerankCheck | None, trees: Trees | None, cases: int,
            how: str) -> dict[str, Any]:
    if check is None:
        return {"decision": "blend alone", "cases": cases,
                "reason": "too few cases to hold out a tenth for the check"}
    figures = check.to_dict()
    if trees is not None:
        reason = (f"{how} trees beat the blend on {check.cases} held-out cases: HR@10 "
                  f"{check.rerank_hr:.4f} against {check.blend_hr:.4f}")
    else:
        reason = (f"{how} trees did not beat the blend on {check.cases} held-out cases: "
                  f"HR@10 {check.rerank_hr:.4f} against {check.blend_hr:.4f}")
    return {"decision": "reranked" if trees is not None else "blend alone",
            "reason": reason, "cases": cases, how.replace(" ", "_"): True, **figures}


def _attach(bundle: ModelBundle, trees: Trees | None, cases: int,
            record: dict[str, Any]) -> None:
    attach_trees(bundle, trees, cases)
    bundle.manifest["reranker"] = record
