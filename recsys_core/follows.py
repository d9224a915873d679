"""Follow graphs: who follows whom, from a platform's edge list or generated for MovieLens.

A follow graph is a table of edges ``follower`` → ``followee`` (user ids of the one id
grammar, :data:`recsys_core.events.ID_PATTERN`) with the time each follow was made, in
seconds since the epoch (UTC). A user follows another at most once and never themselves.

- :func:`load_edge_list` reads a platform's own graph: a CSV ``follower,followee[,timestamp]``
  (a header line is optional; times are epoch seconds or ISO 8601 with a timezone). Bad
  lines stop the load with the file and line named (:class:`DataFormatError`).
- :func:`synthetic_follows` makes one for a dataset that has none (MovieLens has no social
  graph): **homophilous** (a user follows mostly people whose ratings overlap theirs) with
  **power-law follower counts** (a few users are followed by many: each user has an
  appeal drawn from a Pareto law, and followees are picked in proportion to it). It is
  what the tests, the demo and the social protocol use; figures measured on it are figures
  on synthetic follows.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_core.dataset import Dataset
from recsys_core.errors import DataFormatError
from recsys_core.events import ID_PATTERN

EDGE_COLUMNS = ("follower", "followee", "timestamp")
_ID = re.compile(ID_PATTERN)
#: dimensions of the taste vectors that similarity between users is measured on
TASTE_DIMS = 256


def empty_graph() -> pd.DataFrame:
    return pd.DataFrame({"follower": pd.Series(dtype=str), "followee": pd.Series(dtype=str),
                         "timestamp": pd.Series(dtype=np.int64)})


def _time(value: str) -> int:
    value = value.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return int(float(value))
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("a time needs a timezone (e.g. 2026-11-24T10:00:00Z)")
    return int(when.timestamp())


def load_edge_list(path: Path | str, default_time: int = 0) -> pd.DataFrame:
    """A follow graph from a CSV of ``follower,followee[,timestamp]`` lines.

    Edges without a time get ``default_time``. A repeated edge keeps its latest time.
    Raises :class:`DataFormatError` naming the line of the first bad one (an id outside
    the grammar, a self-follow, a bad time, a wrong number of fields)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "no such file")
    rows: list[tuple[str, str, int]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for line, fields in enumerate(csv.reader(fh), start=1):
            if not fields or all(not f.strip() for f in fields):
                continue
            fields = [f.strip() for f in fields]
            if line == 1 and [f.lower() for f in fields[:2]] == ["follower", "followee"]:
                continue
            if len(fields) not in (2, 3):
                raise DataFormatError(path, f"expected follower,followee[,timestamp], got "
                                            f"{len(fields)} fields", line)
            follower, followee = fields[0], fields[1]
            for name, value in (("follower", follower), ("followee", followee)):
                if not _ID.match(value):
                    raise DataFormatError(path, f"{name} {value!r} is not a valid user id",
                                          line)
            if follower == followee:
                raise DataFormatError(path, f"user {follower!r} follows themselves", line)
            try:
                ts = _time(fields[2]) if len(fields) == 3 and fields[2] else default_time
            except ValueError as exc:
                raise DataFormatError(path, f"bad timestamp {fields[2]!r}: {exc}",
                                      line) from None
            rows.append((follower, followee, ts))
    if not rows:
        return empty_graph()
    graph = pd.DataFrame(rows, columns=list(EDGE_COLUMNS))
    graph = graph.sort_values("timestamp", kind="stable")
    graph = graph.drop_duplicates(["follower", "followee"], keep="last")
    return graph.sort_values(["follower", "followee"]).reset_index(drop=True)


def save_edge_list(graph: pd.DataFrame, path: Path | str) -> Path:
    """Write a graph as the CSV :func:`load_edge_list` reads (with a header)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph.loc[:, list(EDGE_COLUMNS)].to_csv(path, index=False)
    return path


@dataclass(frozen=True)
class SyntheticFollows:
    """How :func:`synthetic_follows` draws a graph."""

    #: mean number of people a user follows (out-degrees are geometric around it)
    mean_follows: float = 8.0
    #: share of a user's follows picked among the people most like them; the rest are
    #: picked over everyone (both in proportion to appeal)
    homophily: float = 0.8
    #: how many of the most similar users are a user's pool of like-minded people
    pool: int = 50
    #: Pareto shape of each user's appeal: smaller is a heavier tail of follower counts
    appeal_shape: float = 1.2
    seed: int = 0


def _similar_users(matrix: np.ndarray, pool: int) -> np.ndarray:
    """For each row, the ``pool`` other rows of highest cosine similarity."""
    norms = np.linalg.norm(matrix, axis=1)
    unit = matrix / np.where(norms > 0, norms, 1.0)[:, None]
    n = unit.shape[0]
    pool = max(1, min(pool, n - 1))
    out = np.empty((n, pool), dtype=np.int64)
    for s in range(0, n, 512):
        sims = unit[s : s + 512] @ unit.T
        sims[np.arange(sims.shape[0]), np.arange(s, s + sims.shape[0])] = -np.inf
        out[s : s + 512] = np.argpartition(-sims, pool - 1, axis=1)[:, :pool]
    return out


def synthetic_follows(dataset: Dataset, params: SyntheticFollows | None = None) -> pd.DataFrame:
    """A homophilous follow graph with power-law follower counts over the dataset's users.

    Taste is each user's row of liked movies (ratings of 4 and above, or all of a user's
    movies when they liked none), randomly projected to :data:`TASTE_DIMS` dimensions.
    Each follow is made at a time when both users are on the platform (after both first
    rated), so a replay in time order sees a follow only once both people exist."""
    p = params or SyntheticFollows()
    rng = np.random.default_rng(p.seed)
    inter = dataset.interactions
    users, u_idx = np.unique(inter["user_id"].to_numpy(dtype=str), return_inverse=True)
    n = users.size
    if n < 2:
        return empty_graph()
    _, m_idx = np.unique(inter["movie_id"].to_numpy(dtype=str), return_inverse=True)
    liked = inter["rating"].to_numpy(dtype=np.float64) >= 4.0
    has_liked = np.bincount(u_idx[liked], minlength=n) > 0
    rows = np.flatnonzero(liked | ~has_liked[u_idx])
    # each movie a random direction, scaled down by its popularity (a blockbuster says less
    # about taste); a user's taste is the sum over their liked movies (a random projection
    # of their row, so that similarity costs n x dims, not n x movies)
    movies = int(m_idx.max()) + 1
    count = np.bincount(m_idx[rows], minlength=movies).astype(np.float32)
    proj = rng.standard_normal((movies, TASTE_DIMS)).astype(np.float32)
    proj /= np.sqrt(np.maximum(count, 1.0))[:, None]
    taste = np.zeros((n, TASTE_DIMS), dtype=np.float32)
    for s in range(0, rows.size, 500_000):
        chunk = rows[s : s + 500_000]
        np.add.at(taste, u_idx[chunk], proj[m_idx[chunk]])
    similar = _similar_users(taste, p.pool)
    appeal = rng.pareto(p.appeal_shape, size=n) + 1.0
    first = pd.Series(inter["timestamp"].to_numpy(dtype=np.int64)).groupby(u_idx).min()
    start = first.reindex(range(n)).to_numpy(dtype=np.int64)
    last = int(inter["timestamp"].max())
    degrees = np.minimum(rng.geometric(1.0 / max(p.mean_follows, 1.0), size=n), n - 1)
    everyone = appeal / appeal.sum()
    followers: list[np.ndarray] = []
    followees: list[np.ndarray] = []
    for u in range(n):
        d = int(degrees[u])
        near = int(rng.binomial(d, p.homophily))
        pool = similar[u]
        w = appeal[pool] / appeal[pool].sum()
        picked = set(rng.choice(pool, size=min(near, pool.size), replace=False, p=w).tolist())
        while len(picked) < d:
            v = int(rng.choice(n, p=everyone))
            if v != u:
                picked.add(v)
        picked.discard(u)
        chosen = np.fromiter(picked, dtype=np.int64)
        followers.append(np.full(chosen.size, u, dtype=np.int64))
        followees.append(chosen)
    src = np.concatenate(followers)
    dst = np.concatenate(followees)
    begin = np.maximum(start[src], start[dst])
    ts = begin + (rng.random(src.size) * 0.1 * np.maximum(last - begin, 0)).astype(np.int64)
    graph = pd.DataFrame({"follower": users[src], "followee": users[dst], "timestamp": ts})
    return graph.sort_values(["follower", "followee"]).reset_index(drop=True)


def follower_counts(graph: pd.DataFrame) -> pd.Series:
    """How many followers each followed user has, most followed first."""
    return graph["followee"].value_counts()
