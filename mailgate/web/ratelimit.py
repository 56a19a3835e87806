"""Token buckets in this daemon's memory: each API key's ``rate``, and failed logins per client address.

A bucket holds ``count`` tokens and refills at ``count`` per ``within``, so a client may burst up to its
rate and then goes on at the rate; a request finding no token is told how long until the next one
(``Retry-After``). Each daemon counts on its own: two daemons behind one balancer allow twice the rate,
which is what a limit against a runaway script needs, not an exact quota.

Failed logins are counted per client address, and while an address is over its allowance its
requests without a valid key are answered 429 without a look at the key. A valid key still works
from there: behind a reverse proxy every client has the proxy's address, and someone sending junk
must not lock the real clients out. That a right guess would get through is no help to a guesser:
a key has 256 random bits. The number of buckets is bounded; the least recently used goes first, and
a forgotten bucket is a full one, which errs towards letting a client in.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from mailgate.config.intake_policy import Rung

FAILED_LOGINS = Rung(20, timedelta(minutes=1), "20/1m")  # per client address
MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    rung: Rung
    tokens: float
    at: float


class Buckets:
    def __init__(self, most: int = MAX_BUCKETS, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._most, self._clock = most, clock

    def _refilled(self, name: str, rung: Rung) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(name)
        if bucket is None or bucket.rung != rung:  # new, or its rate changed on reload: full again
            bucket = _Bucket(rung, float(rung.count), now)
            self._buckets[name] = bucket
            while len(self._buckets) > self._most:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(float(rung.count), bucket.tokens + (now - bucket.at) * _per_second(rung))
            bucket.at = now
        self._buckets.move_to_end(name)
        return bucket

    def take(self, name: str, rung: Rung) -> float:
        """Take a token: 0 when there was one, else the seconds until there is (nothing taken)."""
        bucket = self._refilled(name, rung)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / _per_second(rung)

    def __len__(self) -> int:
        return len(self._buckets)


def _per_second(rung: Rung) -> float:
    return rung.count / max(rung.within.total_seconds(), 1e-3)


@dataclass
class Limits:
    keys: Buckets = field(default_factory=Buckets)  # by API key name
    failures: Buckets = field(default_factory=Buckets)  # failed logins, by client address


def limits(state: Any) -> Limits:
    """The app's buckets (``app.state``), made on first use: they live as long as the listener."""
    found = getattr(state, "api_limits", None)
    if not isinstance(found, Limits):
        found = Limits()
        state.api_limits = found
    return found
