"""Redis memory of the stream's dedupe, measured with ``MEMORY USAGE`` on a private Redis:
per user, the id window (the last N event ids) and the offset marks in the user's meta
hash; against the earlier scheme (one ``SET NX EX`` key per event id).

Run: ``python -m benchmarks.dedupe_memory [--users 200] [--events-per-user 300]``.
"""

from __future__ import annotations

import argparse
import json

from adapters.redis_store import DEDUPE_WINDOW, Interaction, UserStateStore
from devstack import RedisServer
from recsys_core.keys import Keys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--events-per-user", type=int, default=300)
    args = ap.parse_args()
    with RedisServer() as server:
        client = server.client()
        keys = Keys("mem")
        store = UserStateStore(client, keys=keys)
        offset = 0
        for n in range(args.events_per_user):
            batch = []
            for u in range(args.users):
                batch.append(Interaction(
                    f"ml-25m:{u}:{n}:16000{n:05d}", f"user{u}", str(1 + n), 1.6e9 + n, 4.0,
                    None, b"{}", ("ratings.v1", u % 8, offset)))
                offset += 1
            store.apply(batch, log=False)
        window = sum(int(client.memory_usage(keys.recent_event_ids(f"user{u}")) or 0)
                     for u in range(args.users)) / args.users
        meta_with = sum(int(client.memory_usage(keys.meta(f"user{u}")) or 0)
                        for u in range(args.users)) / args.users
        client.hdel(keys.meta("user0"), "o:ratings.v1:0")
        meta_without = int(client.memory_usage(keys.meta("user0")) or 0)
        # the earlier scheme: one key per event id, with a TTL
        client.set("mem:ev:ml-25m:1:1:1600000001", "1", ex=7 * 24 * 3600)
        per_event_key = int(client.memory_usage("mem:ev:ml-25m:1:1:1600000001") or 0)
        client.close()
    print(json.dumps({
        "users": args.users, "events_per_user": args.events_per_user,
        "window": DEDUPE_WINDOW,
        "id_window_bytes_per_user": round(window),
        "offset_mark_bytes_per_user_and_partition": round(meta_with) - meta_without,
        "earlier_key_bytes_per_event": per_event_key,
    }))


if __name__ == "__main__":
    main()
