"""recsys_core.scoring: top-k, neighbour sums, blending and recommend() on a tiny bundle."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp

from recsys_core.artifacts import STAGE_POPULARITY, ModelBundle, validate
from recsys_core.errors import ArtifactError
from recsys_core.foldin import fold_in_user, gramian
from recsys_core.history import UserHistory
from recsys_core.peers import peer_scores, peer_sources, peer_votes
from recsys_core.scoring import (
    COMPONENTS,
    BlendWeights,
    blend,
    component_scores,
    content_profile,
    neighbor_scores,
    recommend,
    standardize,
    standardized,
    top_k,
)
from recsys_core.vocab import Vocabulary

N_ITEMS = 8
ONLY_SESSION = BlendWeights(cf=0.0, item=0.0, session=1.0, content=0.0, popularity=0.0)


def _csr(dense: npt.NDArray[np.float64]) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]
]:
    m = sp.csr_matrix(dense)
    m.sort_indices()
    return m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32)


def make_bundle(
    neighbors: npt.NDArray[np.float64] | None = None,
    session: npt.NDArray[np.float64] | None = None,
    popularity: npt.NDArray[np.float32] | None = None,
    seed: int = 0,
) -> ModelBundle:
    """A valid bundle of N_ITEMS movies with the given item-to-item matrices (dense)."""
    rng = np.random.default_rng(seed)
    n, k = N_ITEMS, 3
    item_factors = rng.standard_normal((n, k)).astype(np.float32)
    content = rng.standard_normal((n, 4))
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    nb = _csr(np.zeros((n, n)) if neighbors is None else neighbors)
    ss = _csr(np.zeros((n, n)) if session is None else session)
    pop = (
        np.linspace(1.0, 0.0, n, dtype=np.float32)[rng.permutation(n)]
        if popularity is None
        else popularity
    )
    bundle = ModelBundle(
        version=1,
        movies=Vocabulary([f"m{i}" for i in range(n)], kind="movie"),
        titles=np.asarray([f"Movie {i}" for i in range(n)], dtype=np.str_),
        years=np.full(n, 1995, dtype=np.int32),
        genres=np.asarray(["Drama"] * n, dtype=np.str_),
        item_factors=item_factors,
        yty=gramian(item_factors),
        popularity=pop,
        content_vectors=content.astype(np.float32),
        neighbor_indptr=nb[0], neighbor_indices=nb[1], neighbor_scores=nb[2],
        session_indptr=ss[0], session_indices=ss[1], session_scores=ss[2],
        rating_item_bias=np.zeros(n, dtype=np.float32),
        rating_item_factors=np.zeros((n, 2), dtype=np.float32),
        manifest={"params": {"als_regularization": 0.1}},
    )
    validate(bundle)
    return bundle


def _random_sparse(seed: int, density: float = 0.4) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((N_ITEMS, N_ITEMS))
    dense[rng.random((N_ITEMS, N_ITEMS)) > density] = 0.0
    np.fill_diagonal(dense, 0.0)
    dense[5] = 0.0  # a movie without neighbours
    return dense


# --- top_k ------------------------------------------------------------------------------


def test_top_k_returns_best_first_with_scores() -> None:
    idx, scores = top_k(np.array([0.1, 0.5, 0.3, 0.9]), 2)
    assert idx.tolist() == [3, 1]
    assert idx.dtype == np.int64
    np.testing.assert_allclose(scores, [0.9, 0.5])


def test_top_k_breaks_ties_by_lower_index() -> None:
    idx, scores = top_k(np.array([2.0, 1.0, 2.0, 0.0, 2.0]), 3)
    assert idx.tolist() == [0, 2, 4]
    np.testing.assert_allclose(scores, [2.0, 2.0, 2.0])


def test_top_k_breaks_ties_at_the_cut_by_lower_index() -> None:
    idx, _ = top_k(np.array([0.0, 0.0, 1.0, 1.0]), 1)
    assert idx.tolist() == [2]


def test_top_k_skips_excluded_items() -> None:
    idx, _ = top_k(np.array([0.1, 0.5, 0.3, 0.9]), 2, exclude=np.array([3]))
    assert idx.tolist() == [1, 2]


def test_top_k_respects_the_allowed_mask() -> None:
    allowed = np.array([True, False, True, False])
    idx, scores = top_k(np.array([0.1, 0.5, 0.3, 0.9]), 3, allowed=allowed)
    assert idx.tolist() == [2, 0]
    np.testing.assert_allclose(scores, [0.3, 0.1])


def test_top_k_combines_exclude_and_allowed() -> None:
    allowed = np.array([True, True, True, False])
    idx, _ = top_k(np.array([0.1, 0.5, 0.3, 0.9]), 4, exclude=np.array([1]), allowed=allowed)
    assert idx.tolist() == [2, 0]


def test_top_k_with_k_larger_than_the_candidates_returns_them_all() -> None:
    idx, scores = top_k(np.array([0.2, -1.0, 0.7]), 10)
    assert idx.tolist() == [2, 0, 1]
    np.testing.assert_allclose(scores, [0.7, 0.2, -1.0])
    idx, _ = top_k(np.array([0.2, -1.0, 0.7]), 10, exclude=np.array([0, 1]))
    assert idx.tolist() == [2]


def test_top_k_with_nothing_to_return_is_empty() -> None:
    for idx, scores in (
        top_k(np.array([0.2, 0.7]), 0),
        top_k(np.array([0.2, 0.7]), 3, exclude=np.array([0, 1])),
        top_k(np.array([0.2, 0.7]), 3, allowed=np.array([False, False])),
        top_k(np.zeros(0), 3),
    ):
        assert idx.shape == (0,) and idx.dtype == np.int64
        assert scores.shape == (0,)


def test_top_k_does_not_modify_the_scores() -> None:
    scores = np.array([0.1, 0.5, 0.3])
    top_k(scores, 2, exclude=np.array([1]), allowed=np.array([True, True, False]))
    np.testing.assert_array_equal(scores, [0.1, 0.5, 0.3])


# --- neighbour scores -------------------------------------------------------------------


@pytest.mark.parametrize("model", ["neighbor", "session"])
def test_neighbor_scores_equal_the_dense_computation(model: str) -> None:
    dense = _random_sparse(seed=3)
    bundle = (
        make_bundle(neighbors=dense) if model == "neighbor" else make_bundle(session=dense)
    )
    items = np.array([1, 4, 4, 5, 6, 0], dtype=np.int64)
    weights = np.array([1.0, 0.5, 0.25, 3.0, 0.0, -2.0])
    expected = weights @ dense[items]
    got = neighbor_scores(bundle, items, weights, model)
    assert got.shape == (N_ITEMS,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_neighbor_scores_for_many_random_histories_equal_the_dense_computation() -> None:
    dense = _random_sparse(seed=4, density=0.7)
    bundle = make_bundle(neighbors=dense)
    rng = np.random.default_rng(5)
    for _ in range(20):
        items = rng.integers(0, N_ITEMS, size=rng.integers(1, 12)).astype(np.int64)
        weights = rng.random(items.size)
        np.testing.assert_allclose(
            neighbor_scores(bundle, items, weights), weights @ dense[items], atol=1e-6
        )


def test_neighbor_scores_are_zero_without_weight_or_neighbours() -> None:
    bundle = make_bundle(neighbors=_random_sparse(seed=3))
    zeros = np.zeros(N_ITEMS)
    np.testing.assert_array_equal(
        neighbor_scores(bundle, np.array([1, 2]), np.zeros(2)), zeros
    )
    # movie 5 has no neighbours
    np.testing.assert_array_equal(neighbor_scores(bundle, np.array([5]), np.ones(1)), zeros)
    np.testing.assert_array_equal(
        neighbor_scores(bundle, np.zeros(0, dtype=np.int64), np.zeros(0)), zeros
    )


def test_unknown_item_to_item_model_name_is_refused() -> None:
    with pytest.raises(KeyError):
        neighbor_scores(make_bundle(), np.array([0]), np.ones(1), "nope")


# --- standardise and blend --------------------------------------------------------------


def test_standardize_gives_zero_mean_unit_variance() -> None:
    out = standardize(np.array([1.0, 2.0, 3.0, 10.0]))
    assert out.mean() == pytest.approx(0.0, abs=1e-12)
    assert out.std() == pytest.approx(1.0)
    np.testing.assert_array_equal(standardize(np.full(4, 7.0)), np.zeros(4))


def test_standardized_equals_standardize_of_each_component() -> None:
    """In one pass for all components, to the bit: rankings do not move."""
    rng = np.random.default_rng(3)
    comps = {"cf": rng.normal(size=1682) * 3.0 + 1.0, "item": rng.random(1682) ** 4,
             "flat": np.full(1682, 2.5), "big": rng.normal(size=100_003) * 1e6}
    big = comps.pop("big")
    z = standardized(comps)
    assert list(z) == list(comps)
    for name, s in comps.items():
        assert np.array_equal(z[name], standardize(s))
    assert np.array_equal(standardized({"big": big})["big"], standardize(big))
    assert standardized({}) == {}


def test_blend_is_the_weighted_sum_of_standardised_components() -> None:
    # standardize([1, 2, 3]) = (-1.224745, 0, 1.224745)          (mean 2, std sqrt(2/3))
    # standardize([10, 10, 40]) = (-0.707107, -0.707107, 1.414214) (mean 20, std sqrt(200))
    comps = {"cf": np.array([1.0, 2.0, 3.0]), "item": np.array([10.0, 10.0, 40.0])}
    total, parts = blend(comps, BlendWeights(cf=1.0, item=2.0))
    a, b = np.sqrt(1.5), 1 / np.sqrt(2)
    np.testing.assert_allclose(parts["cf"], [-a, 0.0, a])
    np.testing.assert_allclose(parts["item"], [-2 * b, -2 * b, 4 * b])
    np.testing.assert_allclose(total, [-a - 2 * b, -2 * b, a + 4 * b])


def test_blend_ignores_the_scale_and_offset_of_a_component() -> None:
    rng = np.random.default_rng(6)
    cf, item = rng.random(10), rng.random(10)
    w = BlendWeights(cf=0.7, item=0.3)
    total, _ = blend({"cf": cf, "item": item}, w)
    scaled, _ = blend({"cf": 1000.0 * cf - 5.0, "item": item / 100.0 + 2.0}, w)
    np.testing.assert_allclose(total, scaled, atol=1e-9)


def test_blend_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing to blend"):
        blend({}, BlendWeights())


def test_blend_weights_round_trip_through_dict() -> None:
    w = BlendWeights(cf=0.5, item=0.0, session=2.0, session_decay=0.7, session_length=12)
    back = BlendWeights.from_dict({**w.to_dict(), "unknown": 1})
    assert back == w
    assert BlendWeights.from_dict({"session_length": 7.0}).session_length == 7
    assert isinstance(BlendWeights.from_dict({"session_length": 7.0}).session_length, int)


# --- components -------------------------------------------------------------------------


def test_component_scores_skip_components_with_zero_weight() -> None:
    bundle = make_bundle(neighbors=_random_sparse(3), session=_random_sparse(4))
    history = UserHistory.build([1, 2], [11.0, 6.0], [10.0, 20.0])
    assert set(component_scores(bundle, history, BlendWeights())) == {
        "cf", "item", "session", "content", "popularity",
    }
    only_cf = BlendWeights(cf=1.0, item=0.0, session=0.0, content=0.0, popularity=0.0)
    assert set(component_scores(bundle, history, only_cf)) == {"cf"}
    # an empty history leaves popularity only
    assert set(component_scores(bundle, UserHistory.empty(), BlendWeights())) == {"popularity"}


def test_cf_component_is_the_folded_in_vector_times_item_factors() -> None:
    bundle = make_bundle()
    history = UserHistory.build([1, 2, 6], [11.0, 6.0, 3.0])
    x = fold_in_user(bundle.item_factors, bundle.yty, history.item_idx, history.confidence, 0.1)
    comps = component_scores(bundle, history, BlendWeights())
    np.testing.assert_allclose(comps["cf"], bundle.item_factors @ x, rtol=1e-5)
    # a stored vector is used as given
    stored = np.ones(3, dtype=np.float32)
    comps = component_scores(bundle, history, BlendWeights(), vector=stored)
    np.testing.assert_allclose(comps["cf"], bundle.item_factors.sum(axis=1), rtol=1e-6)


def test_content_profile_is_the_normalised_strength_weighted_mean() -> None:
    bundle = make_bundle()
    bundle.content_vectors = np.eye(N_ITEMS, 4, dtype=np.float32)
    # items 0 and 1 (unit vectors e0, e1) with confidences 11 and 6: strengths 10 and 5
    # profile (10, 5, 0, 0) / sqrt(125) = (0.894427, 0.447214, 0, 0)
    history = UserHistory.build([0, 1], [11.0, 6.0])
    np.testing.assert_allclose(
        content_profile(bundle, history), [2 / np.sqrt(5), 1 / np.sqrt(5), 0.0, 0.0]
    )
    # all confidences 1 (no preference): plain mean of the vectors, normalised
    flat = UserHistory.build([0, 1], [1.0, 1.0])
    np.testing.assert_allclose(content_profile(bundle, flat), [np.sqrt(0.5), np.sqrt(0.5), 0, 0])


# --- recommend --------------------------------------------------------------------------


def test_recommend_for_an_empty_history_returns_popularity_order() -> None:
    pop = np.array([0.2, 0.9, 0.1, 1.0, 0.5, 0.0, 0.3, 0.8], dtype=np.float32)
    bundle = make_bundle(popularity=pop)
    idx, scores, parts = recommend(bundle, UserHistory.empty(), BlendWeights(), k=4)
    assert idx.tolist() == [3, 1, 7, 4]
    assert set(parts) == {"popularity"}
    assert np.all(np.diff(scores) < 0)


def test_recommend_falls_back_to_popularity_when_its_weight_is_zero() -> None:
    pop = np.array([0.2, 0.9, 0.1, 1.0, 0.5, 0.0, 0.3, 0.8], dtype=np.float32)
    bundle = make_bundle(popularity=pop)
    idx, _, parts = recommend(bundle, UserHistory.empty(), BlendWeights(popularity=0.0), k=3)
    assert idx.tolist() == [3, 1, 7]
    assert set(parts) == {"popularity"}


def test_recommend_excludes_seen_items() -> None:
    # k covers the whole catalogue: the three seen movies are the only ones left out
    bundle = make_bundle(neighbors=_random_sparse(7, density=0.9))
    history = UserHistory.build([1, 3, 6], [11.0, 9.0, 7.0], [1.0, 2.0, 3.0])
    idx, _, _ = recommend(bundle, history, BlendWeights(), k=N_ITEMS)
    assert set(idx.tolist()).isdisjoint({1, 3, 6})
    assert len(idx) == N_ITEMS - 3
    idx_all, _, _ = recommend(bundle, history, BlendWeights(), k=N_ITEMS, exclude_seen=False)
    assert sorted(idx_all.tolist()) == list(range(N_ITEMS))


def test_recommend_respects_the_allowed_mask() -> None:
    bundle = make_bundle(neighbors=_random_sparse(7, density=0.9))
    history = UserHistory.build([1], [11.0])
    allowed = np.zeros(N_ITEMS, dtype=bool)
    allowed[[0, 4, 5]] = True
    idx, _, _ = recommend(bundle, history, BlendWeights(), k=5, allowed=allowed)
    assert sorted(idx.tolist()) == [0, 4, 5]


def test_recommend_scores_are_the_sum_of_the_weighted_parts() -> None:
    bundle = make_bundle(neighbors=_random_sparse(3), session=_random_sparse(4))
    history = UserHistory.build([1, 2], [11.0, 6.0], [10.0, 20.0])
    idx, scores, parts = recommend(bundle, history, BlendWeights(), k=4)
    total = np.sum(list(parts.values()), axis=0)
    np.testing.assert_allclose(scores, total[idx])


def _session_bundle() -> ModelBundle:
    # sittings taught: after 0 comes 4, after 1 comes 5 (equally strong)
    session = np.zeros((N_ITEMS, N_ITEMS))
    session[0, 4] = 1.0
    session[1, 5] = 1.0
    return make_bundle(session=session)


def test_session_component_favours_neighbours_of_the_newest_item() -> None:
    bundle = _session_bundle()
    w = BlendWeights(cf=0.0, item=0.0, session=1.0, content=0.0, popularity=0.0,
                     session_decay=0.5)
    # 0 watched first, 1 last: weights 0.5 and 1
    history = UserHistory.build([0, 1], [11.0, 11.0], timestamps=[100.0, 200.0])
    comps = component_scores(bundle, history, w)
    assert comps["session"][4] == pytest.approx(0.5)
    assert comps["session"][5] == pytest.approx(1.0)
    idx, _, _ = recommend(bundle, history, w, k=2)
    assert idx.tolist() == [5, 4]
    # the same movies watched in the other order: 0 is now the newest
    reversed_history = UserHistory.build([0, 1], [11.0, 11.0], timestamps=[200.0, 100.0])
    idx, _, _ = recommend(bundle, reversed_history, w, k=2)
    assert idx.tolist() == [4, 5]


def test_session_component_without_decay_weighs_the_history_equally() -> None:
    bundle = _session_bundle()
    w = BlendWeights(cf=0.0, item=0.0, session=1.0, content=0.0, popularity=0.0,
                     session_decay=1.0)
    history = UserHistory.build([0, 1], [11.0, 11.0], timestamps=[100.0, 200.0])
    comps = component_scores(bundle, history, w)
    assert comps["session"][4] == comps["session"][5] == pytest.approx(1.0)


def test_session_component_reads_only_the_last_session_length_items() -> None:
    bundle = _session_bundle()
    w = BlendWeights(cf=0.0, item=0.0, session=1.0, content=0.0, popularity=0.0,
                     session_decay=0.9, session_length=1)
    history = UserHistory.build([0, 1], [11.0, 11.0], timestamps=[100.0, 200.0])
    comps = component_scores(bundle, history, w)
    assert comps["session"][4] == 0.0
    assert comps["session"][5] == pytest.approx(1.0)


def test_only_session_weights_fall_back_to_nothing_for_an_empty_history() -> None:
    # with every other weight 0, an empty history has no component: popularity takes over
    pop = np.linspace(0.0, 1.0, N_ITEMS, dtype=np.float32)
    idx, _, _ = recommend(make_bundle(popularity=pop), UserHistory.empty(), ONLY_SESSION, k=2)
    assert idx.tolist() == [N_ITEMS - 1, N_ITEMS - 2]


# --- recency ranks, sequence, stage and peers -------------------------------------------

NONE = {name: 0.0 for name in COMPONENTS}


def test_recency_ranks_count_distinct_newer_seconds() -> None:
    history = UserHistory.build([0, 1, 2, 3], [2.0] * 4, timestamps=[1.0, 2.0, 2.0, 3.0])
    assert history.recency_ranks().tolist() == [2, 1, 1, 0]
    np.testing.assert_allclose(history.recency_weights(0.5, 2), [0.0, 0.5, 0.5, 1.0])
    assert UserHistory.empty().recency_ranks().size == 0


def test_recency_weights_do_not_depend_on_the_order_within_a_second() -> None:
    a = UserHistory.build([0, 1, 2], [2.0] * 3, timestamps=[1.0, 5.0, 5.0])
    b = UserHistory.build([0, 2, 1], [2.0] * 3, timestamps=[1.0, 5.0, 5.0])
    bundle = make_bundle(session=_random_sparse(7))
    w = BlendWeights(**{**NONE, "session": 1.0}, session_decay=0.5)
    np.testing.assert_allclose(component_scores(bundle, a, w)["session"],
                               component_scores(bundle, b, w)["session"])


def _with_sequence(bundle: ModelBundle, dense: npt.NDArray[np.float64]) -> ModelBundle:
    indptr, indices, scores = _csr(dense)
    bundle.extra.update(sequence_indptr=indptr, sequence_indices=indices,
                        sequence_scores=scores)
    validate(bundle)
    return bundle


def test_sequence_component_reads_the_newest_seconds_with_its_own_decay() -> None:
    seq = np.zeros((N_ITEMS, N_ITEMS))
    seq[0, 4] = seq[1, 5] = seq[2, 6] = 1.0
    bundle = _with_sequence(make_bundle(), seq)
    w = BlendWeights(**{**NONE, "sequence": 1.0}, sequence_decay=0.5, sequence_length=2)
    # 2 is the newest second (rank 0), 1 rank 1, 0 rank 2: beyond the length
    history = UserHistory.build([0, 1, 2], [11.0] * 3, timestamps=[1.0, 2.0, 3.0])
    comps = component_scores(bundle, history, w)
    assert set(comps) == {"sequence"}
    np.testing.assert_allclose(comps["sequence"][[4, 5, 6]], [0.0, 0.5, 1.0])
    idx, _, _ = recommend(bundle, history, w, k=2)
    assert idx.tolist() == [6, 5]


def test_components_of_models_the_bundle_lacks_are_left_out() -> None:
    bundle = make_bundle()
    assert not bundle.has_model("sequence")
    every = BlendWeights(**dict.fromkeys(COMPONENTS, 1.0))
    history = UserHistory.build([1], [11.0])
    assert set(component_scores(bundle, history, every)) == {
        "cf", "item", "session", "content", "popularity"}
    with pytest.raises(KeyError):
        bundle.csr("sequence")


def test_stage_component_picks_the_row_of_the_history_length() -> None:
    bundle = make_bundle()
    table = np.arange(3 * N_ITEMS, dtype=np.float32).reshape(3, N_ITEMS)
    bundle.extra[STAGE_POPULARITY] = table
    bundle.manifest["params"]["stage_per_octave"] = 1.0
    validate(bundle)
    w = BlendWeights(**{**NONE, "stage": 1.0})
    # stages: 0 movies → 0, 1 → 1, 2 → 1 (log2 3 = 1.58), 3 → 2, 7 → 3 (past the end: 2)
    for n, row in ((0, 0), (1, 1), (2, 1), (3, 2), (7, 2)):
        history = UserHistory.build(np.arange(n), np.full(n, 2.0))
        np.testing.assert_array_equal(component_scores(bundle, history, w)["stage"], table[row])
    # an empty history is ranked by its stage, not by popularity, when stage has weight
    idx, _, parts = recommend(bundle, UserHistory.empty(), w, k=2)
    assert idx.tolist() == [N_ITEMS - 1, N_ITEMS - 2] and set(parts) == {"stage"}


def test_stage_popularity_of_the_wrong_width_is_refused() -> None:
    bundle = make_bundle()
    bundle.extra[STAGE_POPULARITY] = np.zeros((2, N_ITEMS - 1), dtype=np.float32)
    with pytest.raises(ArtifactError):
        validate(bundle)


def _with_peers(bundle: ModelBundle, users: list[int], items: list[int]) -> ModelBundle:
    """Peers rating ``items`` in order, one second apart."""
    from training.models.peers import fit_peer_sequences

    arrays = fit_peer_sequences(np.asarray(users), np.asarray(items),
                                np.arange(len(items), dtype=np.float64), N_ITEMS)
    bundle.extra.update(arrays)
    validate(bundle)
    return bundle


ONLY_PEERS = BlendWeights(**{**NONE, "peers": 1.0}, peers_decay=0.5, peers_length=10)


def test_peers_component_known_answer() -> None:
    # peer 0 rated 0, 1, 2; peer 1 rated 3, 0, 4: both share movie 0 with the user
    bundle = _with_peers(make_bundle(), [0, 0, 0, 1, 1, 1], [0, 1, 2, 3, 0, 4])
    history = UserHistory.build([0], [11.0], timestamps=[100.0])
    scores = component_scores(bundle, history, ONLY_PEERS)["peers"]
    sim = 3.0 ** -0.3  # one shared movie of weight 1, three movies each
    e1, e2 = np.exp(-0.1), np.exp(-0.2)  # one and two places away, bandwidth 10
    np.testing.assert_allclose(scores, sim * np.array([2, e1, e2, e1, e1, 0, 0, 0]))
    assert peer_scores(bundle, history, 0.5, 10) is not None


def test_peers_scores_and_reasons_equal_the_formula_summed_vote_by_vote() -> None:
    """The vectorised kernel against the module's formula, one (peer, movie, query movie)
    vote at a time: several query movies per second, peers missing some of them."""
    rng = np.random.default_rng(11)
    users, items = [], []
    for u in range(40):
        seen = rng.permutation(N_ITEMS)[: rng.integers(2, N_ITEMS + 1)]
        users += [u] * seen.size
        items += seen.tolist()
    bundle = _with_peers(make_bundle(), users, items)
    history = UserHistory.build([0, 1, 2, 3, 4], np.full(5, 11.0),
                                timestamps=[10.0, 10.0, 20.0, 30.0, 30.0])
    votes = peer_votes(bundle, history, 0.5, 10)
    assert votes is not None and votes.peers.size > 5 and np.isnan(votes.anchors).any()
    x = bundle.extra
    expected = np.zeros(N_ITEMS)
    by_source = np.zeros((N_ITEMS, votes.query.size))
    for s, peer in enumerate(votes.peers.tolist()):
        for e in range(int(x["peers_user_indptr"][peer]), int(x["peers_user_indptr"][peer + 1])):
            movie, position = int(x["peers_user_items"][e]), float(x["peers_user_positions"][e])
            for k, anchor in enumerate(votes.anchors[s].tolist()):
                if not np.isnan(anchor):
                    vote = (votes.similarity[s] * votes.weights[k]
                            * np.exp(-abs(position - anchor) / 10.0))
                    expected[movie] += vote
                    by_source[movie, k] += vote
    # the kernel runs in float32 (relative error about 1e-7)
    np.testing.assert_allclose(peer_scores(bundle, history, 0.5, 10), expected, rtol=1e-6)
    sources = peer_sources(bundle, history, 0.5, 10, list(range(N_ITEMS)))
    for movie in range(N_ITEMS):
        if by_source[movie].max() <= 0:
            assert movie not in sources
            continue
        k = votes.query.tolist().index(sources[movie])  # the best source, up to rounding
        assert by_source[movie, k] == pytest.approx(by_source[movie].max(), rel=1e-12)


def test_peers_component_keeps_only_the_most_similar_peers() -> None:
    bundle = _with_peers(make_bundle(), [0, 0, 0, 1, 1], [0, 1, 2, 0, 5])
    bundle.manifest["params"]["peers_neighbours"] = 1
    history = UserHistory.build([0], [11.0])
    scores = component_scores(bundle, history, ONLY_PEERS)["peers"]
    sim = 2.0 ** -0.3  # the shorter peer is the more similar one
    np.testing.assert_allclose(scores, sim * np.array([1, 0, 0, 0, 0, np.exp(-0.1), 0, 0]))


def test_peers_component_without_a_shared_movie_or_peer_arrays_is_left_out() -> None:
    bundle = _with_peers(make_bundle(), [0, 0], [0, 1])
    assert "peers" not in component_scores(bundle, UserHistory.build([6], [11.0]), ONLY_PEERS)
    assert "peers" not in component_scores(make_bundle(), UserHistory.build([0], [11.0]),
                                           ONLY_PEERS)


def test_peer_arrays_that_do_not_match_are_refused() -> None:
    bundle = _with_peers(make_bundle(), [0, 0], [0, 1])
    bundle.extra["peers_item_users"] = np.array([0, 7], dtype=np.int32)
    with pytest.raises(ArtifactError):
        validate(bundle)
