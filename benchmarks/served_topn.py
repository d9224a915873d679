"""Protocol A through the served product: what a new user of the product gets.

For each seed the protocol A split (75/25 per user) is made; its training part is written
as a dataset directory (the source's own format, the catalogue files linked) and the stack
is brought up on it as ``recsys up --dataset DIR --train-fraction 1.0 --no-replay`` does
(:class:`devstack.stack.Stack`: broker, Redis, ``recsys train`` for version 1, users seeded
into Redis, a stream worker, the trainer, the API). Every test user's top-10 is then fetched
over HTTP with ``exclude_seen=true``, per surface, and scored with ``recsys_core.metrics``
next to what ``recsys eval -p topn`` computes in-process for the same seed
(:func:`training.evaluation.topn.topn_run`), with the share of users whose two top-10s are
identical and the count of recommended movies the user had already rated (must be 0).

``python -m benchmarks.served_topn [--dataset ml-100k] [--seeds 42,7,2026] [--max-users N]
[--out reports]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from benchmarks.harness import DATA_DIR
from devstack import free_port
from devstack.stack import Stack, StackOptions
from recsys_core.dataset import Dataset
from recsys_core.loaders import load_dataset, resolve_dataset_dir
from recsys_core.loaders.resolve import detect_format
from recsys_core.surfaces import SURFACES
from training.evaluation.topn import K, TopnRun, ranking_row, topn_run
from training.pipeline import TrainParams
from training.registry import ModelRegistry
from training.settings import TrainerSettings

console = Console()
METRICS = ("precision@10", "recall@10", "ndcg@10", "map@10")


def write_dataset(source: Path, rows: pd.DataFrame, target: Path) -> Path:
    """``rows`` as the interactions of a dataset directory in ``source``'s format, every
    other file of ``source`` (catalogue, knowledge graph, tags) linked in."""
    fmt = detect_format(source)
    target.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame({"u": rows["user_id"].astype(str), "m": rows["movie_id"].astype(str),
                        "r": rows["rating"].astype(float),
                        "t": rows["timestamp"].astype("int64")})
    if fmt == "recbole":
        stem = next(p.stem for p in sorted(source.glob("*.inter")))
        inter = target / f"{target.name}.inter"
        out.to_csv(inter, sep="\t", index=False, float_format="%g",
                   header=["user_id:token", "item_id:token", "rating:float",
                           "timestamp:float"])
        for f in source.iterdir():
            if f.suffix != ".inter" and f.stem == stem:
                (target / f"{target.name}{f.suffix}").symlink_to(f.resolve())
    elif fmt == "grouplens-csv":
        out.to_csv(target / "ratings.csv", index=False, float_format="%g",
                   header=["userId", "movieId", "rating", "timestamp"])
        for f in source.iterdir():
            if f.name != "ratings.csv":
                (target / f.name).symlink_to(f.resolve())
    else:
        raise ValueError(f"writing a {fmt} dataset is not supported (recbole, grouplens-csv)")
    return target


def served_tops(api: str, users: list[str], surface: str, k: int = K
                ) -> tuple[list[list[str]], int]:
    """Each user's served top-k movie ids for ``surface`` (exclude_seen=true), and how many
    answers had a fallback reason."""
    out, fallbacks = [], 0
    with httpx.Client(base_url=api, timeout=30) as client:
        for user in users:
            r = client.get(f"/v1/users/{user}/recommendations",
                           params={"k": k, "exclude_seen": "true", "surface": surface})
            r.raise_for_status()
            body = r.json()
            if body["surface"] != surface:
                raise RuntimeError(f"asked for {surface}, the API answered {body['surface']}")
            fallbacks += body["fallback_reason"] is not None
            out.append([it["movie_id"] for it in body["items"]])
    return out, fallbacks


def compare(run: TopnRun, served: dict[str, list[list[str]]]) -> dict[str, Any]:
    """Metrics of the served and the in-process top-10s, their agreement, and the served
    movies each user had already rated."""
    movies = run.models.bundle.movies
    rated = run.train.groupby("user_id")["movie_id"].agg(set).to_dict()
    relevant = [c.relevant for c in run.cases]
    out: dict[str, Any] = {}
    for surface, lists in served.items():
        tops = [[int(i) for i in movies.indices(ids, on_missing="minus_one")] for ids in lists]
        mine = run.tops[surface]
        out[surface] = {
            "served": ranking_row(tops, relevant, run.models),
            "in_process": ranking_row(mine, relevant, run.models),
            "identical_users": float(np.mean([t == m.tolist() for t, m in
                                              zip(tops, mine, strict=True)])),
            "already_rated": int(sum(len(set(ids) & rated.get(u, set()))
                                     for u, ids in zip(run.users, lists, strict=True))),
            "short_lists": int(sum(len(ids) < K for ids in lists)),
        }
    return out


def subsample(ds: Dataset, max_users: int | None) -> Dataset:
    """The dataset's interactions of its first ``max_users`` users (by id order), all of
    the catalogue."""
    if not max_users:
        return ds
    users = sorted(ds.interactions["user_id"].astype(str).unique())[:max_users]
    keep = ds.interactions["user_id"].astype(str).isin(set(users))
    return type(ds)(ds.name, ds.interactions[keep].reset_index(drop=True), ds.movies,
                    ds.attributes, ds.users, ds.links)


def served_seed(ds: Dataset, source: Path, seed: int, scratch: Path,
                environ: dict[str, str] | None = None) -> dict[str, Any]:
    """One seed: in-process protocol A, then the stack on the split's training part."""
    env = dict(os.environ if environ is None else environ)
    # the trainer's parameters: its history cap is the stream's (RECSYS_USER_HISTORY_CAP)
    params = TrainParams(history_cap=TrainerSettings().user_history_cap)
    console.print(f"seed {seed}: in-process protocol A (the trainer's code)")
    run = topn_run(ds, params, seed)
    target = write_dataset(source, run.train, scratch / f"seed-{seed}" / source.name)
    options = StackOptions(dataset=str(target), train_fraction=1.0, replay=False,
                           api_port=free_port(), run_dir=scratch / f"run-{seed}",
                           ready_timeout=300.0)
    stack = Stack(options, environ={**env, "RECSYS_LOG_LEVEL": "warning"},
                  on_phase=lambda p: console.print(f"seed {seed}: {p}"))
    served: dict[str, list[list[str]]] = {}
    fallbacks: dict[str, int] = {}
    try:
        stack.start()
        for surface in SURFACES:
            served[surface], fallbacks[surface] = served_tops(stack.addresses.api, run.users,
                                                              surface)
        published = ModelRegistry(stack.run.models).load().manifest
    finally:
        stack.stop()
    same_weights = published.get("surfaces") == run.models.bundle.manifest["surfaces"]
    return {"seed": seed, "users": len(run.users), "train_rows": len(run.train),
            "test_rows": len(run.test), "same_fitted_weights": bool(same_weights),
            "fallbacks": fallbacks, "surfaces": compare(run, served)}


def mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for surface in runs[0]["surfaces"]:
        rows = [r["surfaces"][surface] for r in runs]
        out[surface] = {
            side: {m: float(np.mean([row[side][m] for row in rows])) for m in METRICS}
            for side in ("served", "in_process")
        }
        out[surface]["identical_users"] = float(np.mean([r["identical_users"] for r in rows]))
        out[surface]["already_rated"] = int(sum(r["already_rated"] for r in rows))
    return out


def report(result: dict[str, Any]) -> None:
    t = Table(title=f"Protocol A served over HTTP, {result['dataset']} (mean of seeds "
                    f"{result['seeds']})")
    for col in ("surface", "path", *METRICS, "identical", "already rated"):
        t.add_column(col, justify="right" if col not in ("surface", "path") else "left")
    for surface, row in result["mean"].items():
        for side in ("served", "in_process"):
            t.add_row(surface, side, *[f"{row[side][m]:.4f}" for m in METRICS],
                      f"{row['identical_users']:.3f}" if side == "served" else "",
                      str(row["already_rated"]) if side == "served" else "")
    console.print(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", default="42,7,2026")
    parser.add_argument("--max-users", type=int, default=None,
                        help="only the first N users' interactions (a quick check)")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    source = resolve_dataset_dir(args.dataset, DATA_DIR).resolve()
    ds = subsample(load_dataset(str(source)), args.max_users)
    with tempfile.TemporaryDirectory(prefix="bench-served-topn-") as tmp:
        runs = [served_seed(ds, source, s, Path(tmp)) for s in seeds]
    result = {"dataset": ds.name, "seeds": seeds, "max_users": args.max_users,
              "runs": runs, "mean": mean_over_seeds(runs)}
    report(result)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"served-topn-{ds.name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
