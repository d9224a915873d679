"""The reranker: features logged over a real replay, trees exported from scikit-learn and
evaluated with numpy, movie activity windows, the case log, the trainer's stage."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from recsys_core.activity import DAY, WEEK, MovieActivity, activity_arrays
from recsys_core.artifacts import ArtifactError, load_bundle, save_bundle
from recsys_core.dataset import Dataset
from recsys_core.rerank import CANDIDATES, FEATURES, Trees, rerank
from recsys_core.scoring import BlendWeights, blend, component_scores, standardized, top_k
from training.evaluation.live import LiveReplay, seeded_activity
from training.evaluation.splits import temporal_split
from training.pipeline import TrainParams, train_models
from training.registry import ModelRegistry
from training.rerank import (
    CaseLog,
    attach_trees,
    check_trees,
    export_trees,
    fit_checked,
    fit_trees,
)
from training.rerank_stage import CASES_FILE, update_reranker
from training.weights import history_of

#: a fixed blend: these tests are about the second stage
WEIGHTS = BlendWeights(sequence=1.0, stage=0.5, peers=0.5)


@pytest.fixture(scope="module")
def replayed(ml100k: Dataset) -> LiveReplay:
    """1,500 events of ml-100k replayed against a model of the 97% before them."""
    train, rest = temporal_split(ml100k.interactions, 0.97)
    live = LiveReplay(ml100k, TrainParams(), WEIGHTS, train, retrain_every=0, rerank_every=0)
    columns = list(train.columns)
    for row in rest.iloc[:1500].itertuples(index=False, name=None):
        live.step(row, columns)
    return live


def test_logged_cases_hold_the_chosen_movie(replayed: LiveReplay) -> None:
    x, y = replayed.cases.arrays()
    assert x.shape[1] == len(FEATURES)
    assert len(replayed.cases) == 1500 - replayed.skipped
    # the chosen movie is among the blend's 50 best in about half the events
    assert 0.3 < y.sum() / len(replayed.cases) < 0.8
    # a third of the other candidates are kept
    assert (~y).sum() == pytest.approx(0.3 * (CANDIDATES * len(replayed.cases) - y.sum()),
                                       rel=0.05)
    assert np.isfinite(x[:, FEATURES.index("blend")]).all()


def test_exported_trees_score_like_scikit_learn(replayed: LiveReplay) -> None:
    x, y = replayed.cases.arrays()
    clf = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, min_samples_leaf=50,
                                         early_stopping=False,
                                         random_state=0).fit(x, y)
    trees = export_trees(clf)
    assert trees.roots.size == 40
    # NaN (unknown years) takes the learnt missing-value branch, as in scikit-learn
    assert np.isnan(x).any()
    np.testing.assert_allclose(trees.score(x), clf.decision_function(x), atol=1e-9)


def test_leaf_tables_score_as_the_walk_does(replayed: LiveReplay) -> None:
    """The bit tables reach the walk's leaves exactly: values on a threshold go left,
    missing values take each node's learnt side, wider trees are walked."""
    x, y = replayed.cases.arrays()
    clf = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=31, min_samples_leaf=20,
                                         early_stopping=False, random_state=0).fit(x, y)
    trees = export_trees(clf)
    probe = x[:400].astype(np.float64)
    internal = np.flatnonzero(trees.left != np.arange(trees.left.size))
    rows = np.arange(200)
    nodes = internal[rows % internal.size]
    probe[rows, trees.feature[nodes]] = trees.threshold[nodes]  # exactly on a threshold
    probe[200:260, :5] = np.nan
    assert np.array_equal(trees.score(probe), trees.walk(probe))
    np.testing.assert_allclose(trees.score(probe), clf.decision_function(probe), atol=1e-9)
    wide = export_trees(HistGradientBoostingClassifier(
        max_iter=5, max_leaf_nodes=100, min_samples_leaf=5, early_stopping=False,
        random_state=0).fit(x, y))  # over 64 leaves a tree: no tables, the walk scores
    leaves = np.add.reduceat(wide.left == np.arange(wide.left.size), wide.roots)
    assert leaves.max() > 64
    np.testing.assert_allclose(wide.score(probe), wide.walk(probe), atol=0)


def test_reranked_top_ten_reorders_the_head_only(replayed: LiveReplay) -> None:
    x, y = replayed.cases.arrays()
    trees = fit_trees(x, y, iterations=30)
    assert trees is not None
    bundle = replayed.bundle
    history = replayed.histories[next(iter(replayed.histories))]
    h = history_of(history)
    comps = component_scores(bundle, h, WEIGHTS)
    total = blend(comps, WEIGHTS)[0]
    cand, _ = top_k(total, 80, h.item_idx)
    idx, scores = rerank(trees, bundle, standardized(comps), total, cand, h,
                          replayed.activity)
    assert sorted(idx[:CANDIDATES].tolist()) == sorted(cand[:CANDIDATES].tolist())
    assert idx[CANDIDATES:].tolist() == cand[CANDIDATES:].tolist()
    assert (np.diff(scores) <= 0).all()
    assert not np.isin(idx, h.item_idx).any()


def test_trees_travel_in_the_bundle(replayed: LiveReplay, tmp_path: Path) -> None:
    x, y = replayed.cases.arrays()
    trees = fit_trees(x, y, iterations=20)
    bundle = replayed.bundle
    attach_trees(bundle, trees, len(replayed.cases))
    try:
        loaded = load_bundle(save_bundle(bundle, tmp_path / "v1"))
        again = Trees.from_bundle(loaded)
        assert again is not None and trees is not None
        np.testing.assert_allclose(again.score(x[:500]), trees.score(x[:500]))
        loaded.extra["rerank_left"] = loaded.extra["rerank_left"] + 10**6
        with pytest.raises(ArtifactError, match="rerank node index"):
            save_bundle(loaded, tmp_path / "v2")
    finally:
        attach_trees(bundle, None, 0)
    assert Trees.from_bundle(bundle) is None


def test_activity_windows_follow_event_time() -> None:
    a = MovieActivity()
    t0 = 100 * DAY  # the start of a day (UTC)
    a.add("1", t0)
    a.add("1", t0 + 0.5 * DAY)
    a.add("2", t0 + 2 * DAY)
    pos = a.positions_of(["1", "2", "3"])
    known, day, week = a.features(pos)
    assert a.now == t0 + 2 * DAY
    # movie 1's events are over a day old (the day is the current hour and the 24 before)
    assert day.tolist() == [0, 1, 0]
    assert week.tolist() == [2, 1, 0]
    assert known[:2].tolist() == [2.0, 0.0] and np.isnan(known[2])
    a.add("3", t0 + 2 * DAY + WEEK)
    _, day, week = a.features(pos)
    # the week is the current day and the 7 before: movie 2's day is the oldest counted
    assert day.tolist() == [0, 0, 1] and week.tolist() == [0, 1, 1]
    a.add("3", t0 + 2 * DAY + WEEK + DAY)
    _, day, week = a.features(pos)
    # an event 24 hours before the current hour still counts for the day
    assert day.tolist() == [0, 0, 2] and week.tolist() == [0, 0, 2]
    # an event older than the week counts for first-seen only
    a.add("4", t0)
    _, day, week = a.features(a.positions_of(["4"]))
    assert day.tolist() == [0] and week.tolist() == [0]


def test_activity_seeded_from_bundle_arrays_equals_feeding_every_event(
        ml100k: Dataset) -> None:
    inter = ml100k.interactions.sort_values("timestamp", kind="stable")
    bundle = train_models(ml100k, interactions=inter.iloc[:20000]).bundle
    items = bundle.movies.indices(inter["movie_id"].iloc[:20000].astype(str))
    times = inter["timestamp"].iloc[:20000].to_numpy(np.float64)
    arrays = activity_arrays(items, times, bundle.n_items)
    np.testing.assert_array_equal(arrays["activity_items"], bundle.extra["activity_items"])
    seeded = MovieActivity.from_arrays(bundle.movies, *arrays.values())
    fed = MovieActivity()
    for mid, ts in zip(inter["movie_id"].iloc[:20000].astype(str), times, strict=True):
        fed.add(mid, float(ts))
    assert seeded.now == fed.now
    a = seeded.features(seeded.positions(bundle.movies))
    b = fed.features(fed.positions(bundle.movies))
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)


def test_case_log_keeps_the_newest_window(tmp_path: Path) -> None:
    log = CaseLog(window=3)
    rng = np.random.default_rng(1)
    for i in range(8):
        log.add(rng.random((CANDIDATES, len(FEATURES)), dtype=np.float32), i % 4)
    assert len(log) == 3
    x, y = log.arrays()
    assert y.sum() == 3
    log.save(tmp_path / "cases.npz", through=5.0)
    again, meta = CaseLog.load(tmp_path / "cases.npz", window=3)
    assert meta == {"through": 5.0}
    np.testing.assert_array_equal(again.arrays()[0], x)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    empty, meta = CaseLog.load(tmp_path / "bad.npz")
    assert len(empty) == 0 and meta == {}


def test_trainer_stage_logs_new_events_then_refits(ml100k: Dataset, tmp_path: Path) -> None:
    inter = ml100k.interactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    first = train_models(ml100k, interactions=inter.iloc[:97000], weights=WEIGHTS).bundle
    registry = ModelRegistry(tmp_path)
    registry.publish(first)
    later = replace(ml100k, interactions=inter.iloc[:99000])
    second = train_models(later, interactions=inter.iloc[:99000], weights=WEIGHTS,
                          version=2).bundle
    out = update_reranker(later, TrainParams(), registry, second, every=1000, min_cases=1000)
    assert out.new_cases > 1900 and out.refitted
    record = second.manifest["reranker"]
    # refitted on all but the newest tenth, checked on that tenth; published only if better
    assert record["refitted"] and record["held_out_cases"] == round(0.1 * out.cases)
    better = (record["rerank_hr@10"], record["rerank_mrr@10"]) > (
        record["blend_hr@10"], record["blend_mrr@10"])
    assert out.has_trees == better == (Trees.from_bundle(second) is not None)
    assert record["decision"] == ("reranked" if better else "blend alone")
    assert 0.1 < record["blend_hr@10"] < 0.6
    assert (tmp_path / CASES_FILE).exists()
    registry.publish(second)
    # nothing new: trees are carried over (with their record), not refitted; no trees
    # are fitted again from the same cases
    third = train_models(later, interactions=inter.iloc[:99000], weights=WEIGHTS,
                         version=3).bundle
    out = update_reranker(later, TrainParams(), registry, third, every=1000, min_cases=1000)
    assert out.new_cases == 0
    t2, t3 = Trees.from_bundle(second), Trees.from_bundle(third)
    if t2 is not None:
        assert not out.refitted and t3 is not None
        np.testing.assert_array_equal(t2.value, t3.value)
        assert third.manifest["reranker"]["carried_from"] == 2
    else:
        assert third.manifest["reranker"]["decision"] == "blend alone" and t3 is None


def _stump(feature: int, threshold: float) -> Trees:
    """One split: candidates with ``feature`` above ``threshold`` score 1, the others 0."""
    return Trees(feature=np.array([feature, 0, 0], np.int32),
                 threshold=np.array([threshold, 0.0, 0.0]),
                 left=np.array([1, 1, 2], np.int32), right=np.array([2, 1, 2], np.int32),
                 value=np.array([0.0, 0.0, 1.0]), missing_left=np.ones(3, bool),
                 roots=np.array([0], np.int32), base=0.0, depth=1)


def test_held_out_check_scores_the_trees_against_the_blend_order() -> None:
    rank = FEATURES.index("blend_rank")
    x = np.zeros((CANDIDATES, len(FEATURES)), np.float32)
    x[:, rank] = np.arange(CANDIDATES)
    # the stump puts blend ranks 3..49 first (in blend order), then 0, 1, 2
    trees = _stump(rank, 2.5)
    check = check_trees(trees, [(x, 0), (x, 5), (x, -1)])
    assert check.cases == 3
    assert check.blend_hr == pytest.approx(2 / 3)
    assert check.blend_mrr == pytest.approx((1.0 + 1 / 6) / 3)
    assert check.rerank_hr == pytest.approx(1 / 3)  # rank 0 falls to 48th, rank 5 to 3rd
    assert check.rerank_mrr == pytest.approx((1 / 3) / 3)
    assert not check.better
    assert check_trees(trees, [(x, 5)]).better
    assert check.to_dict()["held_out_cases"] == 3


def test_trees_that_do_not_beat_the_blend_are_not_kept(replayed: LiveReplay) -> None:
    """Fitted on cases whose chosen movie is drawn at random, the trees learn nothing
    the blend's order does not know: the check on true cases refuses them."""
    rng = np.random.default_rng(3)
    true = replayed.cases.newest(len(replayed.cases))
    noisy = CaseLog(full=len(true))
    for x, _chosen in true[:-300]:
        noisy.add(x, int(rng.integers(len(x))))
    for x, chosen in true[-300:]:
        noisy.add(x, chosen)
    trees, check = fit_checked(noisy, holdout_share=300 / len(noisy), iterations=50)
    assert check is not None and check.cases == 300 and not check.better
    assert trees is None
    # the real cases, same split: whatever the outcome, the trees are kept only if better
    trees, check = fit_checked(replayed.cases, holdout_share=300 / len(true), iterations=50)
    assert check is not None and (trees is not None) == check.better
    assert fit_checked(replayed.cases, min_holdout=10_000) == (None, None)


def test_case_log_keeps_every_candidate_of_the_newest_cases(tmp_path: Path) -> None:
    log = CaseLog(window=5, full=2)
    rng = np.random.default_rng(1)
    rows = [rng.random((CANDIDATES, len(FEATURES)), dtype=np.float32) for _ in range(6)]
    for i, x in enumerate(rows):
        log.add(x, i % 3 - 1)
    assert len(log) == 5 and log.full_cases == 2
    newest = log.newest(5)
    assert [c for _, c in newest] == [0, 1]
    np.testing.assert_array_equal(newest[-1][0], rows[-1])
    assert len(log.arrays(exclude_newest=2)[1]) < len(log.arrays()[1])
    log.save(tmp_path / "cases.npz", through=1.0)
    again, _ = CaseLog.load(tmp_path / "cases.npz", window=5, full=2)
    assert [c for _, c in again.newest(2)] == [0, 1]
    np.testing.assert_array_equal(again.newest(1)[0][0], rows[-1])


def test_seeded_activity_equals_feeding_every_event(ml100k: Dataset) -> None:
    events = ml100k.interactions.iloc[:30000]
    fed = MovieActivity()
    ordered = events.sort_values("timestamp", kind="stable")
    for mid, ts in zip(ordered["movie_id"].astype(str), ordered["timestamp"], strict=True):
        fed.add(mid, float(ts))
    seeded = seeded_activity(events)
    ids = sorted(set(ordered["movie_id"].astype(str)))
    assert seeded.now == fed.now
    for left, right in zip(seeded.features(seeded.positions_of(ids)),
                           fed.features(fed.positions_of(ids)), strict=True):
        np.testing.assert_array_equal(left, right)
