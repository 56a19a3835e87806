"""How often one client address may send the contact form or a status page reply (``http.form.rate``).

In memory, per process: a restart forgets, which costs at most one more window's worth of posts.
A sliding window per address; addresses not seen for a window are dropped, so the table holds only
the addresses active now (and at most ``MAX_CLIENTS`` of them: past that, the longest quiet goes).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

MAX_CLIENTS = 100_000


class Throttle:
    def __init__(self) -> None:
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, count: int, within: float, now: float | None = None) -> float | None:
        """Count one post from ``client``: None when allowed, else the seconds until the next one is."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._forget(now - within)
            times = self._seen.pop(client, None) or deque()
            while times and times[0] <= now - within:
                times.popleft()
            self._seen[client] = times  # last: the most recently active
            if len(times) >= count:
                return max(1.0, times[0] + within - now)
            times.append(now)
            while len(self._seen) > MAX_CLIENTS:
                self._seen.popitem(last=False)
            return None

    def _forget(self, horizon: float) -> None:
        """Drop the least recently active addresses whose last post is out of the window."""
        while self._seen:
            client, times = next(iter(self._seen.items()))
            if times and times[-1] > horizon:
                return
            del self._seen[client]
