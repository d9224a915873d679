"""Follows through the stack as ``recsys up`` starts it: an outside kafka-python producer
sends follows, ratings and garbage in the wire format; the API is asked over HTTP.

    recsys up -d ml-100k --no-replay --api-port 8765
    python -m benchmarks.social_stack http://127.0.0.1:8765 <the Kafka address it printed>

Prints how long until "From people you follow" shows the followees' new ratings, whether a
movie the user has seen appears (it must not), the row after an unfollow made through the
API, the dead letters of the garbage, and a seeded user's row (synthetic follows).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("api")
    ap.add_argument("bootstrap")
    args = ap.parse_args()

    def get(path: str) -> Any:
        with urllib.request.urlopen(args.api + path, timeout=10) as r:
            return json.loads(r.read())

    def row(user: str) -> list[tuple[str, str]]:
        body = get(f"/v1/users/{user}/from-follows?k=10")
        return [(it["movie_id"], it["reason"]) for it in body["items"]]

    def wait_row(user: str, movies: list[str]) -> tuple[float, list[tuple[str, str]]]:
        start = time.time()
        got = row(user)
        while [m for m, _ in got] != movies and time.time() - start < 30:
            time.sleep(0.05)
            got = row(user)
        return time.time() - start, got

    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    now = datetime.now(UTC).isoformat()
    tag = uuid.uuid4().hex[:6]
    fan, friends = f"fan-{tag}", [f"friend-{tag}-{n}" for n in range(3)]

    def send(topic: str, user: str, **fields: Any) -> None:
        event = {"event_id": str(uuid.uuid4()), "user_id": user, "occurred_at": now, **fields}
        producer.send(topic, key=user.encode(), value=json.dumps(event).encode())

    def rate(user: str, movie: str, stars: float) -> None:
        send("ratings.v1", user, movie_id=movie, rating=stars)

    rate(fan, "50", 5)  # seen by the fan: never in the fan's row
    for friend in friends:
        send("follows.v1", fan, followee_id=friend)
    producer.flush()
    time.sleep(2)
    for friend in friends:
        rate(friend, "181", 5)
    rate(friends[0], "50", 5)
    rate(friends[0], "100", 4)
    rate(friends[1], "1", 2)  # a low rating recommends nothing
    send("follows.v1", fan, followee_id=fan)  # invalid: a self-follow
    producer.send("follows.v1", key=b"x", value=b"{not json")
    producer.flush()
    seconds, got = wait_row(fan, ["181", "100"])
    print(f"row after the followees' ratings ({seconds:.2f} s): {got}")
    print("a movie the user has seen in the row:", any(m == "50" for m, _ in got))
    print("follows listed:", len(get(f"/v1/users/{fan}/follows")["follows"]))
    req = urllib.request.Request(f"{args.api}/v1/users/{fan}/follows/{friends[0]}",
                                 method="DELETE")
    print("DELETE follow:", urllib.request.urlopen(req, timeout=10).status)
    seconds, got = wait_row(fan, ["181"])
    print(f"row after the unfollow ({seconds:.2f} s): {got}")
    letters = KafkaConsumer("follows.v1.dlq", bootstrap_servers=args.bootstrap,
                            auto_offset_reset="earliest", consumer_timeout_ms=5000)
    print("dead letters:", [json.loads(m.value)["reason"] for m in letters])
    print("seeded user 1 (synthetic follows):", row("1")[:3])


if __name__ == "__main__":
    main()
