"""Pipe intake for MTA aliases and batch imports: a file, stdin, an mbox or a Maildir.

Mails are stored by the same pipeline as the listener's, in group commits of up to ``BATCH`` mails
as they are read (an archive is never held whole, and one fsync serves a whole batch); each mail has
its own savepoint, so one that fails does not take the others with it, and nothing is reported
stored before its batch commits. Exit codes are chosen in ``cli/``; this module reports each mail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mailgate.domain import Envelope, Outcome
from mailgate.errors import Rejected, TempFail
from mailgate.intake.mailfiles import each_mail, envelope
from mailgate.pipeline.ingest import Context, ingest_batch

BATCH = 64  # mails per transaction: the listener's group commit, for the same reason
BATCH_BYTES = 32 << 20  # and no more than this much mail held for one commit


@dataclass(frozen=True)
class PipeResult:
    source: str
    outcome: Outcome | None
    error: Rejected | TempFail | None


def run(
    names: list[str], ctx: Context, *, sender: str | None = None, recipient: str | None = None
) -> Iterator[PipeResult]:
    """Store every message; one failure does not stop the rest of an mbox."""
    mail_from, rcpt = envelope(sender, recipient)
    limit = ctx.config.main.intake.smtp.max_message_size if ctx.config.main.intake.smtp else None
    batch: list[tuple[str, bytes, Envelope]] = []
    held = 0  # bytes of the mails in ``batch``
    for label, raw, problem in each_mail(names):
        if raw is None:
            yield from _store(batch, ctx)
            held = 0
            yield PipeResult(label, None, TempFail(problem or label))
            continue
        if limit is not None and len(raw) > limit:
            yield PipeResult(label, None, Rejected(f"message too large ({len(raw)} > {limit} bytes)"))
            continue
        env = Envelope(mail_from=mail_from, rcpt_tos=(rcpt,) if rcpt else (), source="pipe",
                       received_at=ctx.clock.now())
        batch.append((label, raw, env))
        held += len(raw)
        if len(batch) >= BATCH or held > BATCH_BYTES:
            yield from _store(batch, ctx)
            held = 0
    yield from _store(batch, ctx)


def _store(batch: list[tuple[str, bytes, Envelope]], ctx: Context) -> Iterator[PipeResult]:
    if not batch:
        return
    outcomes = ingest_batch([(raw, env) for _, raw, env in batch], ctx)
    labels = [label for label, _, _ in batch]
    batch.clear()
    for label, outcome in zip(labels, outcomes, strict=True):
        if isinstance(outcome, TempFail):
            yield PipeResult(label, None, outcome)
        elif outcome.status == "rejected":
            yield PipeResult(label, None, Rejected(outcome.reason or "rejected by policy"))
        else:
            yield PipeResult(label, outcome, None)
