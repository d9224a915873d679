"""recsys_core.candidates: candidate scoring equals full scoring on the candidates."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from benchmarks.serving import synthetic_bundle
from recsys_core.artifacts import STAGE_POPULARITY, ModelBundle
from recsys_core.candidates import (
    CandidateIndex,
    CoarseIndex,
    candidate_components,
    recommend_candidates,
    sparse_neighbor_scores,
)
from recsys_core.explain import explain, explain_items
from recsys_core.history import UserHistory
from recsys_core.scoring import (
    BlendWeights,
    blend,
    component_scores,
    neighbor_scores,
    recommend,
    user_vector,
)

N = 3000
WEIGHTS = BlendWeights(cf=1.0, item=0.7, session=0.5, content=0.2, popularity=0.1,
                       stage=0.3)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    b = synthetic_bundle(N, factors=16, content_dim=16, neighbors=20, seed=3)
    rng = np.random.default_rng(4)
    stages = rng.random((4, N)).astype(np.float32) ** 4
    return replace(b, extra={STAGE_POPULARITY: stages},
                   manifest={**b.manifest, "params": {**b.manifest["params"],
                                                      "stage_per_octave": 1.0}})


@pytest.fixture(scope="module")
def index(bundle: ModelBundle) -> CandidateIndex:
    return CandidateIndex.build(bundle, popular=100, stage_popular=50, cf_count=200,
                                content_count=100, neighbor_count=150)


def histories(n_users: int, seed: int = 5) -> list[UserHistory]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, N + 1) ** 0.9
    p /= p.sum()
    out = []
    for _ in range(n_users):
        size = int(rng.integers(1, 60))
        items = rng.choice(N, size=size, replace=False, p=p)
        out.append(UserHistory.build(items, 1.0 + 3.0 * rng.random(size),
                                     np.sort(rng.integers(0, 40, size)).astype(float)))
    return out


def test_sparse_neighbor_scores_are_the_non_zero_entries_of_the_full_scores(
        bundle: ModelBundle) -> None:
    for h in histories(20):
        w = h.recency_weights(0.9, 30)
        full = neighbor_scores(bundle, h.item_idx, w, "session")
        items, values = sparse_neighbor_scores(bundle, h.item_idx, w, "session")
        assert np.array_equal(items, np.flatnonzero(full))
        assert np.array_equal(values, full[items])  # the same sums, bit for bit


def test_candidate_components_equal_full_scores_and_catalogue_moments(
        bundle: ModelBundle, index: CandidateIndex) -> None:
    for h in histories(15) + [UserHistory.empty()]:
        cand, comps, moments = candidate_components(bundle, index, h, WEIGHTS)
        full = component_scores(bundle, h, WEIGHTS)
        assert list(comps) == list(full)  # the same components, in the same order
        assert np.all(np.diff(cand) > 0)
        for name, scores in full.items():
            np.testing.assert_allclose(comps[name], scores[cand], rtol=1e-5, atol=1e-6)
            mean, std = moments[name]
            assert mean == pytest.approx(float(scores.mean()), rel=1e-4, abs=1e-7)
            assert std == pytest.approx(float(scores.std()), rel=1e-4)


def test_candidate_blend_equals_the_full_blend_and_finds_the_full_top_k(
        bundle: ModelBundle, index: CandidateIndex) -> None:
    identical = 0
    users = histories(40)
    for h in users:
        vector = user_vector(bundle, h)
        full_idx, _, parts = recommend(bundle, h, WEIGHTS, k=10, vector=vector)
        total, _ = blend(component_scores(bundle, h, WEIGHTS, vector=vector), WEIGHTS)
        found = recommend_candidates(bundle, index, h, WEIGHTS, k=10, vector=vector)
        assert found is not None
        idx, scores, item_parts = found
        assert not set(idx.tolist()) & set(h.item_idx.tolist())  # seen movies left out
        np.testing.assert_allclose(scores, total[idx], rtol=1e-5, atol=1e-5)
        for name, part in parts.items():
            np.testing.assert_allclose(item_parts[name], part[idx], rtol=1e-5, atol=1e-5)
        identical += idx.tolist() == full_idx.tolist()
    # every full top-10 movie is the best of some component here: the same lists
    assert identical >= 0.9 * len(users)


def test_reasons_from_candidate_parts_equal_the_full_explanation(
        bundle: ModelBundle, index: CandidateIndex) -> None:
    for h in histories(10, seed=8):
        full_idx, _, parts = recommend(bundle, h, WEIGHTS, k=10)
        found = recommend_candidates(bundle, index, h, WEIGHTS, k=10)
        assert found is not None and found[0].tolist() == full_idx.tolist()
        assert explain_items(bundle, h, WEIGHTS, found[2], found[0]) == explain(
            bundle, h, WEIGHTS, parts, full_idx)


def test_filters_that_leave_too_few_candidates_give_way_to_full_scoring(
        bundle: ModelBundle, index: CandidateIndex) -> None:
    h = histories(1)[0]
    allowed = np.zeros(N, dtype=bool)
    allowed[-5:] = True  # five unpopular movies only
    assert recommend_candidates(bundle, index, h, WEIGHTS, k=10, allowed=allowed) is None
    found = recommend_candidates(bundle, index, h, WEIGHTS, k=10,
                                 exclude=np.arange(N - 50, N, dtype=np.int64))
    assert found is not None and not set(found[0].tolist()) & set(range(N - 50, N))


def test_coarse_index_bounds_every_clusters_best_score_and_covers_the_rows() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 8)).astype(np.float32) * rng.random((2000, 1)).astype(
        np.float32)
    ix = CoarseIndex.build(x, seed=1)
    assert sorted(ix.order.tolist()) == list(range(2000))
    assert ix.top(rng.standard_normal(8), 10_000).size == 2000
    recall = []
    for _ in range(50):
        q = rng.standard_normal(8).astype(np.float32)
        scores = x @ q
        bound = ix.centroids @ q + ix.radius * np.linalg.norm(q)
        for c in range(ix.centroids.shape[0]):
            rows = ix.order[ix.starts[c] : ix.starts[c + 1]]
            if rows.size:
                assert scores[rows].max() <= bound[c] + 1e-4
        top = ix.top(q, 200)
        assert top.size >= 200 and np.unique(top).size == top.size
        best = set(np.argsort(-scores)[:10].tolist())
        recall.append(len(best & set(top.tolist())) / 10)
    # a tenth of the rows holds most of the best ten (a random tenth would hold one)
    assert float(np.mean(recall)) >= 0.6
