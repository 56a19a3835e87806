"""What ``ingest`` prints per mail and at the end, and the exit code it ends with.

One place for both ways a mail is stored (by serve over its socket, or in the ingest process), so an
MTA and an admin read the same lines and the same codes whichever way it went: 75 when any mail must
be tried again, else 65 when any was refused, else 0.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

EX_OK, EX_DATAERR, EX_TEMPFAIL = 0, 65, 75


class IngestReport:
    def __init__(self, *, quiet: bool) -> None:
        self._quiet = quiet
        self._counts: Counter[str] = Counter()
        self._started = time.monotonic()

    def tempfail(self, source: str, reason: str) -> None:
        self._counts["tempfail"] += 1
        print(f"{source}: temporary failure: {reason}", file=sys.stderr)

    def rejected(self, source: str, reason: str) -> None:
        self._counts["rejected"] += 1
        print(f"{source}: rejected: {reason}", file=sys.stderr)

    def stored(self, source: str, status: str, number: str | None, reason: str | None) -> None:
        self._counts[status] += 1
        if not self._quiet:
            detail = f" ticket {number}" if number else ""
            why = f" ({reason})" if reason and status != "accepted" else ""
            print(f"{source}: {status}{detail}{why}", file=sys.stderr)

    def finish(self) -> int:
        total = sum(self._counts.values())
        if total > 1 and not self._quiet:
            seconds = time.monotonic() - self._started
            parts = ", ".join(f"{n} {status}" for status, n in sorted(self._counts.items()))
            print(f"{total} mail(s) in {seconds:.1f} s ({total / max(seconds, 1e-9):.0f}/s): {parts}", file=sys.stderr)
        if self._counts["tempfail"]:
            return EX_TEMPFAIL
        return EX_DATAERR if self._counts["rejected"] else EX_OK
