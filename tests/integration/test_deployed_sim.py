"""The offline simulation of a deployment (protocol C as ``recsys up`` runs it): version 1
as the stack trains it, then the periodic trainer's own runs on the base rows plus the
replayed events, at the events its settings say, with what it publishes serving next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.evaluation.deployed import simulate_deployment
from training.registry import ModelRegistry
from training.settings import TrainerSettings

pytestmark = pytest.mark.slow  # ~1 min on a quiet machine: three training runs on ml-100k

#: the newest 1.5 % of ml-100k replayed, the trainer running every 500 events
FRACTION = 0.985
EVERY = 500


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("deployed")
    settings = TrainerSettings(data_dir=data_dir, train_after_events=EVERY,
                               train_holdout_max_events=200, train_refit_weights_every=2)
    calls: list[tuple[int, int, bool]] = []
    out = simulate_deployment(settings, root / "models", FRACTION, limit=1200,
                              on_version=lambda *a: calls.append(a))
    return {"out": out, "calls": calls, "registry": ModelRegistry(root / "models")}


def test_the_trainer_runs_every_n_events_on_the_base_and_the_events_so_far(
        deployed: dict[str, Any]) -> None:
    out, reg = deployed["out"], deployed["registry"]
    base = round(FRACTION * 100_000)
    assert out["train_events"] == base and out["replay_events"] == 1200
    assert [r["after_events"] for r in out["runs"]] == [0, 500, 1000]
    assert [c[:2] for c in deployed["calls"]] == [(500, 2), (1000, 3)]
    # version 1 trained as the stack trains it: the base rows only, forced live
    assert reg.manifest(1)["data_window"]["interactions"] == base
    # each later run: the base rows plus every event replayed before it, as the event log
    # holds them (no duplicates of the base rows)
    assert reg.manifest(2)["data_window"]["interactions"] == base + 500
    assert reg.manifest(3)["data_window"]["interactions"] == base + 1000
    # the second periodic run refits the weights (train_refit_weights_every=2), the first not
    assert reg.manifest(2)["blend_weights"] == reg.manifest(1)["blend_weights"]
    for v in (2, 3):
        gate = reg.manifest(v)["gate"]
        assert "on the same holdout events" in gate["reason"]
        assert reg.manifest(v)["reranker"]["decision"] == "blend alone"  # < 2,000 cases


def test_every_replayed_event_is_ranked_by_the_version_serving_then(
        deployed: dict[str, Any]) -> None:
    out = deployed["out"]
    assert len(out["ranks"]) == 1200
    scored = [r for r in out["ranks"] if r >= 0]
    assert len(scored) == out["scored"] == 1200 - out["skipped_unknown_movie"]
    assert out["hr@10"] == pytest.approx(sum(r < 10 for r in scored) / len(scored))
    # no trees yet: the served ranking is the blend's
    assert out["hr@10"] == out["blend_hr@10"]
    assert 0.1 < out["hr@10"] < 0.5 and 0.0 < out["mrr@10"] < out["hr@10"]
    assert [w["events"] for w in out["windows"]] == [500, 500, 200]

