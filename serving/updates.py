"""Live "your recommendations changed" notices for the web page: one subscription to the
stream's user-updated channel per API process, fanned out to the server-sent-event
connections of the users it names."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


class UpdateHub:
    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self._listeners: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the subscription; never waits more than two seconds (closing a pub/sub
        connection in the middle of a read can hang in the Redis client)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.connected, backoff = True, 0.5
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep listening whatever Redis does
                log.info("user-updated subscription lost (%s); retrying", exc)
            finally:
                self.connected = False
                await client.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _dispatch(self, data: bytes | str) -> None:
        try:
            users = json.loads(data)
        except ValueError:
            return
        for uid in users if isinstance(users, list) else []:
            for queue in self._listeners.get(str(uid), ()):
                if queue.empty():  # one pending notice is enough
                    queue.put_nowait(str(uid))

    async def listen(self, user_id: str, heartbeat: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events for one user: ``updated`` on each change, comments as
        heartbeats so proxies keep the connection open."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self._listeners[user_id].add(queue)
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    await asyncio.wait_for(queue.get(), timeout=heartbeat)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: updated\ndata: {json.dumps({'user_id': user_id})}\n\n"
        finally:
            self._listeners[user_id].discard(queue)
            if not self._listeners[user_id]:
                del self._listeners[user_id]
