"""recsys_core.explain: the reason names the component that put a movie in the list, and the
movie behind it."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys_core.artifacts import STAGE_POPULARITY, ModelBundle, validate
from recsys_core.confidence import ConfidenceRule
from recsys_core.explain import explain
from recsys_core.foldin import gramian
from recsys_core.history import UserHistory
from recsys_core.scoring import COMPONENTS, BlendWeights, recommend
from recsys_core.vocab import Vocabulary
from training.models.peers import fit_peer_sequences

N = 6
NONE = dict.fromkeys(COMPONENTS, 0.0)


def _csr(dense: npt.NDArray[np.float64]) -> dict[str, npt.NDArray[np.generic]]:
    m = sp.csr_matrix(dense)
    m.sort_indices()
    return {"indptr": m.indptr.astype(np.int64), "indices": m.indices.astype(np.int32),
            "scores": m.data.astype(np.float32)}


def tiny_bundle(sequence: npt.NDArray[np.float64] | None = None) -> ModelBundle:
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((N, 2)).astype(np.float32)
    empty = _csr(np.zeros((N, N)))
    seq = _csr(np.zeros((N, N)) if sequence is None else sequence)
    bundle = ModelBundle(
        version=1, movies=Vocabulary([f"m{i}" for i in range(N)], kind="movie"),
        titles=np.asarray([f"Movie {i}" for i in range(N)], dtype=np.str_),
        years=np.full(N, 1995, dtype=np.int32), genres=np.asarray(["Drama"] * N, dtype=np.str_),
        item_factors=factors, yty=gramian(factors),
        popularity=np.linspace(1, 0, N, dtype=np.float32),
        content_vectors=np.eye(N, 3, dtype=np.float32),
        neighbor_indptr=empty["indptr"], neighbor_indices=empty["indices"],
        neighbor_scores=empty["scores"], session_indptr=empty["indptr"],
        session_indices=empty["indices"], session_scores=empty["scores"],
        rating_item_bias=np.zeros(N, dtype=np.float32),
        rating_item_factors=np.zeros((N, 2), dtype=np.float32),
        manifest={"params": {"als_regularization": 0.1, "stage_per_octave": 2.0}},
        extra={f"sequence_{k}": v for k, v in seq.items()},
    )
    validate(bundle)
    return bundle


def _reasons(bundle: ModelBundle, history: UserHistory, w: BlendWeights, k: int) -> list[str]:
    idx, _, parts = recommend(bundle, history, w, k=k)
    return explain(bundle, history, w, parts, idx)


def test_sequence_reason_names_the_newest_movie_that_leads_there() -> None:
    seq = np.zeros((N, N))
    seq[0, 4] = 1.0  # after 0 people rate 4
    seq[1, 5] = 1.0  # after 1 people rate 5
    bundle = tiny_bundle(seq)
    w = BlendWeights(**{**NONE, "sequence": 1.0}, sequence_decay=0.5)
    history = UserHistory.build([0, 1], [11.0, 11.0], timestamps=[1.0, 2.0])
    idx, _, parts = recommend(bundle, history, w, k=2)
    assert idx.tolist() == [5, 4]
    assert explain(bundle, history, w, parts, idx) == [
        "because you just watched Movie 1", "because you just watched Movie 0"]


def test_peers_reason_names_the_movie_the_peers_watched_it_next_to() -> None:
    bundle = tiny_bundle()
    # a peer watched 0, 1, 2 in a row; the user watched 0
    bundle.extra.update(fit_peer_sequences(np.zeros(3, np.int64), np.array([0, 1, 2]),
                                           np.array([1.0, 2.0, 3.0]), N))
    w = BlendWeights(**{**NONE, "peers": 1.0})
    history = UserHistory.build([0], [11.0])
    assert _reasons(bundle, history, w, 2) == [
        "fans of Movie 0 also watched this"] * 2


def test_stage_reason_for_a_new_member_and_for_a_longer_history() -> None:
    bundle = tiny_bundle()
    bundle.extra[STAGE_POPULARITY] = np.log(np.full((4, N), 1.0 / N, dtype=np.float32)
                                            + np.arange(N, dtype=np.float32)[None, :])
    w = BlendWeights(**{**NONE, "stage": 1.0, "popularity": 0.1})
    assert _reasons(bundle, UserHistory.empty(), w, 2) == ["popular with new members"] * 2
    history = UserHistory.build([0], [11.0])
    assert _reasons(bundle, history, w, 1) == [
        "popular with people who have watched as many movies as you"]


def test_one_list_names_a_source_movie_at_most_twice_on_real_data(ml100k: Any) -> None:
    """A heavy ml-100k user's top-30 from a model trained on all of ml-100k: the reasons
    spread over the history (no source movie named more than MAX_SAME_SOURCE times) and the
    content reasons name the rarest shared trait."""
    from recsys_core.explain import MAX_SAME_SOURCE, content_reason
    from training.matrices import aggregate_pairs
    from training.pipeline import train_models

    weights = BlendWeights(cf=0.3, item=0.3, session=0.3, content=0.3, popularity=0.1,
                           sequence=1.0, peers=1.0)
    bundle = train_models(ml100k, weights=weights).bundle
    rows = ml100k.interactions[ml100k.interactions["user_id"] == "13"]
    pairs = aggregate_pairs(rows, ConfidenceRule())
    idx = bundle.movies.indices(pairs["movie_id"], on_missing="drop")
    history = UserHistory.build(idx, pairs["confidence"].to_numpy(),
                                pairs["timestamp"].to_numpy(float), pairs["rating"].to_numpy())
    items, _, parts = recommend(bundle, history, weights, 30)
    reasons = explain(bundle, history, weights, parts, items)
    named = [r for r in reasons if any(w in r for w in ("watched ", "liked ", "fans of "))]
    assert len(named) >= 10
    for title in {str(t) for t in bundle.titles}:
        assert sum(r.endswith(title) or f" {title} " in r for r in named) <= MAX_SAME_SOURCE
    godfather = bundle.movies.get("127")  # The Godfather: Crime, Action, Drama
    heat = bundle.movies.get("273")  # Heat: Action, Crime, Thriller
    assert godfather is not None and heat is not None
    reason = content_reason(bundle, godfather, heat)
    assert not reason.startswith("Action"), reason
