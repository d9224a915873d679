"""Redis memory per user of the seen set, measured with ``MEMORY USAGE`` on real users.

Every user of a dataset is applied through :meth:`UserStateStore.apply` with the given
history cap (as seeding and the stream do); then each user's keys are measured: the
history hash and recent sorted set (what scoring reads), and the ``dropped`` set (the movies
the cap dropped, which exclusion reads besides the history). For comparison, the same
users' every movie is written as a full seen set and as a bitmap over the model's movie
index (one bit per catalogue movie), and measured the same way.

    .venv/bin/python -m benchmarks.seen_memory -d ml-latest-small --cap 500
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import redis

from benchmarks.harness import DATA_DIR
from devstack import RedisServer
from devstack.seed import seed_interactions
from recsys_core.keys import Keys
from recsys_core.loaders import load_dataset


def measure(client: redis.Redis, dataset_name: str, cap: int) -> dict[str, Any]:
    from adapters.redis_store import UserStateStore

    ds = load_dataset(dataset_name, DATA_DIR)
    keys = Keys("seenmem")
    store = UserStateStore(client, keys=keys, cap=cap)
    inter = ds.interactions
    seed_interactions(store, ds.name, inter)
    movies = {m: i for i, m in enumerate(sorted(inter["movie_id"].astype(str).unique()))}
    per: dict[str, list[int]] = {k: [] for k in ("history", "recent", "dropped", "full_set",
                                                  "bitmap")}
    counts = inter.groupby("user_id")["movie_id"].agg(lambda s: sorted(set(s.astype(str))))
    for user, rated in counts.items():
        uid = str(user)
        full, bits = f"seenmem:full:{{{uid}}}", f"seenmem:bits:{{{uid}}}"
        client.sadd(full, *rated)
        pipe = client.pipeline(transaction=False)
        for m in rated:
            pipe.setbit(bits, movies[m], 1)
        pipe.execute()
        for name, key in (("history", keys.history(uid)), ("recent", keys.recent(uid)),
                          ("dropped", keys.dropped(uid)), ("full_set", full),
                          ("bitmap", bits)):
            per[name].append(int(client.memory_usage(key, samples=0) or 0))
    n_rated = counts.map(len).to_numpy()
    over = n_rated > cap
    return {
        "dataset": ds.name, "cap": cap,
        "set_max_intset_entries": int(client.config_get("set-max-intset-entries")[
            "set-max-intset-entries"]), "users": int(len(counts)),
        "movies": len(movies), "users_over_cap": int(over.sum()),
        "max_movies_per_user": int(n_rated.max()),
        "bytes_per_user_mean": {k: round(float(np.mean(v)), 1) for k, v in per.items()},
        "bytes_per_user_over_cap_mean": {k: round(float(np.mean(np.asarray(v)[over])), 1)
                                         for k, v in per.items()} if over.any() else {},
        "bytes_per_user_max": {k: int(max(v)) for k, v in per.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-d", "--dataset", default="ml-latest-small")
    p.add_argument("--cap", type=int, default=500)
    p.add_argument("--intset-entries", type=int, default=None,
                   help="set-max-intset-entries of the server (Redis default: 512)")
    args = p.parse_args(argv)
    with RedisServer() as server:
        client = server.client()
        if args.intset_entries is not None:
            client.config_set("set-max-intset-entries", args.intset_entries)
        result = measure(client, args.dataset, args.cap)
        client.close()
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
