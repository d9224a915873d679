"""Follow graphs: the edge-list loader and the synthetic generator on real MovieLens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys_core.dataset import Dataset
from recsys_core.errors import DataFormatError
from recsys_core.follows import (
    SyntheticFollows,
    follower_counts,
    load_edge_list,
    save_edge_list,
    synthetic_follows,
)


def test_edge_list_reads_header_times_and_keeps_the_latest_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "follows.csv"
    path.write_text("follower,followee,timestamp\n"
                    "1,2,100\n"
                    "1,3,2026-11-24T10:00:00Z\n"
                    "2,1\n"
                    "1,2,200\n"
                    "\n")
    graph = load_edge_list(path, default_time=7)
    rows = {(a, b): t for a, b, t in graph.itertuples(index=False)}
    assert rows == {("1", "2"): 200, ("1", "3"): 1_795_514_400, ("2", "1"): 7}


@pytest.mark.parametrize(("line", "message"), [
    ("1,1,5", "follows themselves"),
    ("1,a/b", "not a valid user id"),
    ("1,2,3,4", "4 fields"),
    ("1,2,yesterday", "bad timestamp"),
    ("1,2,2026-11-24T10:00:00", "timezone"),
])
def test_edge_list_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "follows.csv"
    path.write_text(f"1,2\n{line}\n")
    with pytest.raises(DataFormatError, match=message) as err:
        load_edge_list(path)
    assert err.value.line == 2


def test_missing_edge_list_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no such file"):
        load_edge_list(tmp_path / "nope.csv")


def _liked(ds: Dataset) -> dict[str, set[str]]:
    inter = ds.interactions
    good = inter[inter["rating"] >= 4]
    return {u: set(g) for u, g in good.groupby("user_id")["movie_id"]}


def test_synthetic_follows_are_homophilous_heavy_tailed_and_round_trip(
        ml100k: Dataset, tmp_path: Path) -> None:
    graph = synthetic_follows(ml100k, SyntheticFollows(seed=3))
    assert (graph["follower"] != graph["followee"]).all()
    assert not graph.duplicated(["follower", "followee"]).any()
    assert 6 <= len(graph) / ml100k.n_users <= 10  # about the mean asked for
    # power-law follower counts: the most followed has many times the median
    counts = follower_counts(graph)
    assert counts.iloc[0] >= 10 * counts.median()
    # homophily: followed pairs share more liked movies than random pairs
    liked = _liked(ml100k)

    def jaccard(a: str, b: str) -> float:
        x, y = liked.get(a, set()), liked.get(b, set())
        return len(x & y) / max(1, len(x | y))

    followed = np.mean([jaccard(a, b) for a, b in zip(graph["follower"], graph["followee"],
                                                       strict=True)])
    rng = np.random.default_rng(0)
    users = np.asarray(sorted(liked))
    random = np.mean([jaccard(*rng.choice(users, 2, replace=False)) for _ in range(3000)])
    assert followed > 1.5 * random
    # a follow is made once both people are on the platform
    first = ml100k.interactions.groupby("user_id")["timestamp"].min()
    assert (graph["timestamp"].to_numpy() >= first[graph["follower"]].to_numpy()).all()
    assert (graph["timestamp"].to_numpy() >= first[graph["followee"]].to_numpy()).all()
    # the same seed gives the same graph; the file round-trips
    again = synthetic_follows(ml100k, SyntheticFollows(seed=3))
    assert again.equals(graph)
    loaded = load_edge_list(save_edge_list(graph, tmp_path / "g.csv"))
    assert loaded.reset_index(drop=True).equals(graph.reset_index(drop=True))
