"""Who a miner serves when it is flooded: limits per client address, and a fair upload queue.

One address must not take the whole miner (`[server]` in the config sets the limits). The HTTP
server (`blockfl.miners.http_server`) caps connections per address, keeps the last connection
slots for addresses that hold none, and times out slow request heads; the API bounds how long
a body may take. Uploads (reading the
body and verifying it) go through an `UploadGate`: a few at a time, at most `uploads_per_client`
of them for one address, and a client that finds the gate full waits briefly in a queue that
serves the address with the fewest uploads in progress first, instead of being refused at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from blockfl.config import ServerConfig


class Busy(Exception):
    """The upload waited `upload_wait` seconds without getting its turn."""


class UploadGate:
    """Admits uploads a few at a time, fairly across client addresses (see the module)."""

    def __init__(self, limits: ServerConfig) -> None:
        self.limits = limits
        self._active: Counter[str] = Counter()
        self._waiting: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._condition = asyncio.Condition()

    def _on_this_loop(self) -> asyncio.Condition:
        """The condition of the running event loop (a test client may run one per request)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._condition = loop, asyncio.Condition()
        return self._condition

    def _turn_of(self, client: str) -> bool:
        limits = self.limits
        if self._active.total() >= limits.uploads:
            return False
        if self._active[client] >= limits.uploads_per_client:
            return False
        # the address with the fewest uploads in progress goes first
        return self._active[client] <= min(self._active[c] for c in self._waiting)

    @asynccontextmanager
    async def turn(self, client: str) -> AsyncIterator[None]:
        """Hold one upload slot for `client`; raise `Busy` after waiting `upload_wait`."""
        condition = self._on_this_loop()
        async with condition:
            self._waiting[client] += 1
            try:
                async with asyncio.timeout(self.limits.upload_wait):
                    await condition.wait_for(lambda: self._turn_of(client))
                self._active[client] += 1
            except TimeoutError:
                raise Busy(f"{self.limits.uploads} uploads in progress; "
                           f"waited {self.limits.upload_wait:g} s for a turn") from None
            finally:
                self._waiting -= Counter({client: 1})
                condition.notify_all()  # the turn may now be another address's
        try:
            yield
        finally:
            async with condition:
                self._active -= Counter({client: 1})
                condition.notify_all()

    def in_progress(self) -> int:
        """Uploads holding a slot now."""
        return self._active.total()
