"""``ingest --history``: an old mailbox or archive imported as history, not as new mail.

Every mail is stored and threaded as the listener would, but at its own date (its Date header;
the import time when it has none), with no SLA clock and no automatic mail of any kind: the people
in an archive were answered long ago, and other help desks' users tell of imports that mailed
thousands of customers. Mails are group-committed in batches. The tickets the import touched are
closed at the end (at their last mail's date); until then they are open, so that a reply found
later in the archive joins its ticket instead of opening a follow-up. An interrupted import is
simply run again: what was stored is recognised as duplicate, and the closing is done then.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC

from mailgate.domain import Envelope
from mailgate.errors import ParseError, TempFail
from mailgate.intake.mailfiles import messages
from mailgate.pipeline.ingest import Context, Parsed, ingest_batch
from mailgate.pipeline.parse import parse
from mailgate.storage.store import Store

BATCH = 64


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    tickets: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _batches(names: list[str], ctx: Context, tally: Tally) -> Iterator[list[tuple[str, bytes, Envelope, Parsed]]]:
    batch: list[tuple[str, bytes, Envelope, Parsed]] = []
    limits = ctx.config.main.intake.limits
    for name in names:
        try:
            for label, raw in messages(name):
                parsed: Parsed
                try:
                    parsed = parse(raw, limits)
                except ParseError as exc:  # stored all the same, in quarantine with the reason
                    parsed = exc
                date = parsed.date if not isinstance(parsed, ParseError) and parsed.date else None
                at = date.astimezone(UTC) if date is not None else ctx.clock.now()
                batch.append((label, raw, Envelope("", (), "pipe", at), parsed))
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
        except OSError as exc:
            tally.counts["unreadable"] += 1
            tally.problems.append(f"{name}: {exc.strerror or exc}")
    if batch:
        yield batch


def import_history(names: list[str], ctx: Context, progress: Callable[[Tally], None] | None = None) -> Tally:
    history = replace(ctx, history=True)
    tally = Tally()
    for batch in _batches(names, history, tally):
        results = ingest_batch([(raw, env) for _, raw, env, _ in batch], history, [p for *_, p in batch])
        for (label, *_), result in zip(batch, results, strict=True):
            if isinstance(result, TempFail):
                tally.counts["tempfail"] += 1
                tally.problems.append(f"{label}: temporary failure: {result}")
                continue
            tally.counts[result.status] += 1
            if result.number:
                tally.tickets.add(result.number)
            if result.status in ("quarantined", "rejected"):
                tally.problems.append(f"{label}: {result.status} ({result.reason})")
        if progress is not None:
            progress(tally)
    if tally.tickets:
        with history.db.transaction() as session:
            Store(session).close_imported(sorted(tally.tickets))
    return tally


def summary(tally: Tally, seconds: float) -> str:
    rate = tally.total / seconds if seconds > 0 else 0.0
    parts = ", ".join(f"{count} {status}" for status, count in sorted(tally.counts.items()))
    return (f"{tally.total} mail(s) in {seconds:.1f} s ({rate:.0f}/s): {parts or 'none'}; "
            f"{len(tally.tickets)} ticket(s), closed as history")
