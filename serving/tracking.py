"""Which users' state revisions this API process knows to be current, without asking Redis.

Redis tells the process when a user's meta hash (``rev``, the vector) changes: server-assisted
client-side caching (``CLIENT TRACKING ON BCAST PREFIX <meta prefix>``, RESP2, redirected to
the tracker's own connection, which is subscribed to ``__redis__:invalidate``). Every applied
event bumps ``rev`` in the same script that changes the history, so a user's answer depends
on nothing that changes without an invalidation of the meta key.

- A revision read from Redis is remembered only when no invalidation of that user arrived
  while the read was in flight (:meth:`StateTracker.begin` / :meth:`StateTracker.end`), so a
  remembered revision was current when it was remembered.
- Invalidations are applied as soon as they reach the socket: the event loop reads them, and
  every lookup first drains whatever has arrived (a non-blocking read), so a lookup sees
  every invalidation Redis had sent by the time the request was read. An answer can lag a
  write only by the time the invalidation takes to cross the network, less than the write's
  own reply takes to reach the writer and a new request to reach the API.
- A lost connection, or Redis flushing its data, forgets everything; until the tracker is
  connected again every lookup misses (and requests read Redis as before). A revision is
  remembered with the epoch of the data set it was read from (``Keys.epoch``), so a Redis
  that restarted empty, whose revisions start again at 1, can never match an old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import hiredis
from redis.connection import parse_url

log = logging.getLogger(__name__)

CHANNEL = b"__redis__:invalidate"


def _command(*args: str | bytes) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"".join([b"*%d\r\n" % len(parts)] +
                    [b"$%d\r\n%s\r\n" % (len(p), p) for p in parts])


class StateTracker:
    def __init__(self, url: str, prefix: str, size: int, timeout: float = 1.0) -> None:
        self.url = url
        self.prefix = prefix
        self.size = size
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader()
        self._known: OrderedDict[str, Hashable] = OrderedDict()
        self._pending: dict[str, int] = {}
        self._dirty: set[str] = set()
        self.client_id: int | None = None  # the connection's id in Redis
        self.generation = 0  # bumped whenever everything is forgotten
        self.invalidations = 0

    @property
    def up(self) -> bool:
        return self._sock is not None

    # -- the connection -------------------------------------------------------------------

    def _open(self) -> socket.socket:
        """A connection with tracking on and subscribed to the invalidation channel
        (blocking; raises OSError or ConnectionError)."""
        opts: dict[str, Any] = parse_url(self.url)
        if opts.get("connection_class") is not None and "path" not in opts:
            raise ConnectionError("TLS connections are not tracked")
        if "path" in opts:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(opts["path"])
        else:
            sock = socket.create_connection((opts.get("host", "localhost"),
                                             int(opts.get("port", 6379))), self.timeout)
        reader = hiredis.Reader()

        def call(*args: str | bytes) -> Any:
            sock.sendall(_command(*args))
            while (reply := reader.gets()) is False:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed")
                reader.feed(data)
            if isinstance(reply, Exception):
                raise ConnectionError(str(reply))
            return reply

        try:
            if opts.get("password"):
                call("AUTH", *([opts["username"]] if opts.get("username") else []),
                     opts["password"])
            client_id = call("CLIENT", "ID")
            call("CLIENT", "TRACKING", "on", "REDIRECT", str(client_id), "BCAST", "PREFIX",
                 self.prefix)
            call("SUBSCRIBE", CHANNEL)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self._reader = reader  # it may hold the first invalidations already
        self.client_id = int(client_id)
        return sock

    async def maintain(self) -> None:
        """Connect when not connected (called at start and periodically)."""
        if self._sock is not None:
            return
        try:
            sock = await asyncio.to_thread(self._open)
        except (OSError, ConnectionError) as exc:
            log.info("state tracking unavailable: %s", exc)
            return
        self.forget()  # nothing read before the subscription can be trusted
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self.poll)
        self.poll()

    def _lost(self, reason: str) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        self.forget()
        log.warning("state tracking connection lost (%s): reading every user from Redis "
                    "until it is back", reason)

    def close(self) -> None:
        if self._sock is not None:
            self._lost("closed")

    def forget(self) -> None:
        self._known.clear()
        self.generation += 1

    # -- invalidations --------------------------------------------------------------------

    def poll(self) -> None:
        """Apply every invalidation that has reached the socket (never blocks)."""
        sock = self._sock
        if sock is None:
            return
        try:
            while True:
                data = sock.recv(262144)
                if not data:
                    self._lost("closed by the server")
                    return
                self._reader.feed(data)
                if len(data) < 262144:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._lost(str(exc))
            return
        while (msg := self._reader.gets()) is not False:
            if not isinstance(msg, list) or len(msg) != 3 or msg[0] != b"message":
                continue
            self.invalidations += 1
            if msg[2] is None:  # the data set was flushed
                self.forget()
                continue
            for raw in msg[2]:
                key = raw.decode()
                self._known.pop(key, None)
                if key in self._pending:
                    self._dirty.add(key)

    # -- lookups ----------------------------------------------------------------------------

    def known(self, key: str) -> Any:
        """The current revision of this meta key (as given to :meth:`end`: the app passes
        the data set's epoch with the user's revision), when this process knows it, else
        None."""
        self.poll()
        return self._known.get(key)

    def begin(self, key: str) -> int | None:
        """Before reading the key's state from Redis; pass the token to :meth:`end`."""
        if self._sock is None:
            return None
        self._pending[key] = self._pending.get(key, 0) + 1
        return self.generation

    def end(self, key: str, token: int | None, rev: Hashable | None) -> None:
        """After the read: remember ``rev`` unless the key changed meanwhile."""
        if token is None:
            return
        self.poll()
        left = self._pending.get(key, 1) - 1
        valid = token == self.generation and key not in self._dirty and self._sock is not None
        if left <= 0:
            self._pending.pop(key, None)
            self._dirty.discard(key)
        else:
            self._pending[key] = left
        if valid and rev is not None:
            self._known[key] = rev
            self._known.move_to_end(key)
            while len(self._known) > self.size:
                self._known.popitem(last=False)
