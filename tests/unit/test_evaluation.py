"""The evaluation protocols on real ml-100k data: they reproduce known baselines and the
hybrid beats its parts."""

from __future__ import annotations

import pytest

from recsys_core.dataset import Dataset
from training.evaluation.protocols import protocol_rating, protocol_stream, protocol_topn
from training.evaluation.splits import stratified_split, temporal_split


def test_stratified_split_by_user_keeps_three_quarters_of_each_user(ml100k: Dataset) -> None:
    train, test = stratified_split(ml100k.interactions, 0.75, "user", 42)
    per_user = train.groupby("user_id").size() / ml100k.interactions.groupby("user_id").size()
    assert per_user.between(0.70, 0.80).all()
    assert set(test["user_id"]) <= set(train["user_id"])
    assert set(test["movie_id"]) <= set(train["movie_id"])
    assert len(train) + len(test) <= len(ml100k.interactions)


def test_stratified_split_is_reproducible_and_seed_dependent(ml100k: Dataset) -> None:
    a, _ = stratified_split(ml100k.interactions, 0.75, "movie", 42)
    b, _ = stratified_split(ml100k.interactions, 0.75, "movie", 42)
    c, _ = stratified_split(ml100k.interactions, 0.75, "movie", 7)
    assert a.index.equals(b.index)
    assert not a.index.equals(c.index)


def test_temporal_split_puts_every_training_event_before_replay(ml100k: Dataset) -> None:
    train, replay = temporal_split(ml100k.interactions, 0.8)
    assert len(train) == 80_000 and len(replay) == 20_000
    assert train["timestamp"].max() <= replay["timestamp"].min()


def test_topn_protocol_reproduces_popularity_and_taste_surface_beats_its_parts(
    ml100k: Dataset,
) -> None:
    result = protocol_topn(ml100k, seed=42)
    rows = result["models"]
    # the benchmark's published most-popular figures: NDCG@10 ~0.25, P@10 0.225
    assert rows["popularity"]["ndcg@10"] == pytest.approx(0.25, abs=0.01)
    assert rows["popularity"]["precision@10"] == pytest.approx(0.225, abs=0.01)
    assert rows["als"]["ndcg@10"] > 0.33
    # the trainer's taste weights (fitted on the training part only, as it would publish)
    assert rows["for_you"]["ndcg@10"] >= 0.475
    for part in ("als", "ease", "session_ease", "content", "popularity"):
        assert rows["for_you"]["ndcg@10"] > rows[part]["ndcg@10"], part
    # next-event weights answer another question: far weaker on held-out taste
    assert rows["up_next"]["ndcg@10"] < rows["for_you"]["ndcg@10"] - 0.1
    assert set(result["surfaces"]) == {"for_you", "up_next"}
    assert result["history_cap"] == 500


def test_rating_protocol_beats_published_svd(ml100k: Dataset) -> None:
    result = protocol_rating(ml100k)
    models = result["models"]
    assert models["biased_mf_als"]["rmse"] < 0.92
    # biases alone land where Surprise's BaselineOnly does (0.944)
    assert models["biases_only"]["rmse"] == pytest.approx(0.944, abs=0.01)
    assert models["global_mean"]["rmse"] > models["biases_only"]["rmse"]


@pytest.mark.slow
def test_stream_protocol_live_beats_frozen(ml100k: Dataset) -> None:
    result = protocol_stream(ml100k, limit=4000, retrain_every=2000, rerank_every=2000,
                             warmup=0.95)
    rows = result["models"]
    assert rows["live_hybrid"]["hr@10"] > 1.8 * rows["frozen_als"]["hr@10"]
    assert rows["live_als"]["hr@10"] > rows["frozen_als"]["hr@10"]
    # one retrain after 2,000 events: the retrained hybrid scores like the live one or better
    assert rows["live_hybrid_retrained"]["hr@10"] > rows["live_hybrid"]["hr@10"] - 0.01
    assert result["retrain_every"] == 2000
    # the simulated live system: a reranker refitted on 4,000 warm-up events' cases, then
    # on 6,000; it may reorder, not lose what the blend finds
    assert rows["live_system"]["hr@10"] > rows["live_hybrid_retrained"]["hr@10"] - 0.03
