"""Recommendation responses kept per API process. A key holds the model version, the
user's state revision (``rev``, bumped by every applied event) and the epoch of the Redis
data set it was read from (a new one after a flush or an empty restart, when revisions
start again at 1), so an entry can never be stale: a new event or a new model version
simply makes a new key, and old entries age out of the LRU. Apps that re-ask for the same
user's list get it without rescoring. With a reranker the key also holds the hour of the
event clock: the movie activity it reads moves with everyone's events, so a reranked answer
is kept for that hour only."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from serving import metrics


class ResponseCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable, count_miss: bool = True) -> bytes | None:
        """The kept body, or None (counted as a miss unless ``count_miss`` is false: the
        caller will look again)."""
        if not self.size:
            return None
        body = self._items.get(key)
        if body is None:
            if count_miss:
                metrics.CACHE.labels("miss").inc()
            return None
        self._items.move_to_end(key)
        metrics.CACHE.labels("hit").inc()
        return body

    def put(self, key: Hashable, body: bytes) -> None:
        if not self.size:
            return
        self._items[key] = body
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
