"""``Idempotency-Key``: a client's retry of a POST must not make a second ticket or message.

The key becomes the composed mail's Message-ID (``intake/channel.py``), so the database decides: the
same request again is a duplicate (answered with the first number and ``Idempotent-Replayed: true``),
another request with the same key is refused. Two requests with one key *in flight at once* would both
be new to the database when they look; within this daemon they are taken one after the other, so the
second finds the first. (Between daemons, PostgreSQL's lock on the mail's hash does the same.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

HEADER = "Idempotency-Key"
MAX_LENGTH = 255
PATTERN = r"^[\x20-\x7e]+$"  # printable ASCII, as the IETF draft's sf-string allows
REPLAYED = "Idempotent-Replayed"


class KeyLocks:
    """One asyncio lock per (client, key) while someone holds or waits for it; forgotten after."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def held(self, client: str, key: str | None) -> AsyncIterator[None]:
        if key is None:
            yield
            return
        name = (client, key)
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users <= 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def locks(state: Any) -> KeyLocks:
    """The app's locks (``app.state``), made on first use."""
    found = getattr(state, "api_idempotency", None)
    if not isinstance(found, KeyLocks):
        found = KeyLocks()
        state.api_idempotency = found
    return found
