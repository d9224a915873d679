"""exclude_seen leaves out the movies beyond the scored history too (the ones the history cap
dropped), on the full blend and on the candidate path, and only with ``exclude_seen``."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.serving import synthetic_bundle
from recsys_core.artifacts import ModelBundle
from recsys_core.candidates import CandidateIndex, recommend_candidates
from recsys_core.history import UserHistory
from recsys_core.scoring import BlendWeights, exclusions, recommend

N = 2000
WEIGHTS = BlendWeights(cf=1.0, item=0.7, session=0.5, content=0.2, popularity=0.1)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return synthetic_bundle(N, factors=16, content_dim=16, neighbors=20, seed=3)


def history(items: list[int]) -> UserHistory:
    return UserHistory.build(items, np.full(len(items), 3.0), np.arange(len(items), dtype=float))


def test_exclusions_add_the_seen_movies_only_with_exclude_seen() -> None:
    h = history([1, 2])
    seen = np.asarray([7, 9], np.int64)
    got = exclusions(h, True, np.asarray([4], np.int64), seen)
    assert got is not None and sorted(got.tolist()) == [1, 2, 4, 7, 9]
    off = exclusions(h, False, None, seen)
    assert off is None


def test_the_movies_top_ranked_before_are_left_out_once_seen(bundle: ModelBundle) -> None:
    h = history([10, 20, 30])
    before, _, _ = recommend(bundle, h, WEIGHTS, 20)
    seen = before[:8]  # the best movies for this user: as if rated long ago and dropped
    after, _, _ = recommend(bundle, h, WEIGHTS, 20, seen=seen)
    assert not set(after.tolist()) & set(seen.tolist())
    assert after.tolist()[:12] == before.tolist()[8:]
    kept, _, _ = recommend(bundle, h, WEIGHTS, 20, exclude_seen=False, seen=seen)
    assert set(seen.tolist()) <= set(kept.tolist())


def test_the_candidate_path_leaves_the_seen_movies_out(bundle: ModelBundle) -> None:
    index = CandidateIndex.build(bundle, popular=100, stage_popular=50, cf_count=200,
                                 content_count=100, neighbor_count=150)
    h = history([10, 20, 30])
    found = recommend_candidates(bundle, index, h, WEIGHTS, 20)
    assert found is not None
    seen = found[0][:8]
    again = recommend_candidates(bundle, index, h, WEIGHTS, 20, seen=seen)
    assert again is not None
    assert not set(again[0].tolist()) & set(seen.tolist())
    assert set(found[0][8:].tolist()) <= set(again[0].tolist())
