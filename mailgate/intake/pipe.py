"""Pipe intake for MTA aliases and batch imports: a file, stdin, an mbox or a Maildir.

Each message is stored by the same ``ingest`` as the listener, as soon as it is read (an archive is
never held whole). Exit codes are chosen in ``cli/``; this module only reports what happened to each.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mailgate.domain import Envelope, Outcome
from mailgate.errors import Rejected, TempFail
from mailgate.intake.mailfiles import each_mail, envelope
from mailgate.pipeline.ingest import Context, ingest


@dataclass(frozen=True)
class PipeResult:
    source: str
    outcome: Outcome | None
    error: Rejected | TempFail | None


def run(
    names: list[str], ctx: Context, *, sender: str | None = None, recipient: str | None = None
) -> Iterator[PipeResult]:
    """Store every message, one at a time; one failure does not stop the rest of an mbox."""
    mail_from, rcpt = envelope(sender, recipient)
    limit = ctx.config.main.intake.smtp.max_message_size if ctx.config.main.intake.smtp else None
    for label, raw, problem in each_mail(names):
        if raw is None:
            yield PipeResult(label, None, TempFail(problem or label))
            continue
        if limit is not None and len(raw) > limit:
            yield PipeResult(label, None, Rejected(f"message too large ({len(raw)} > {limit} bytes)"))
            continue
        env = Envelope(mail_from=mail_from, rcpt_tos=(rcpt,) if rcpt else (), source="pipe",
                       received_at=ctx.clock.now())
        try:
            yield PipeResult(label, ingest(raw, env, ctx), None)
        except (Rejected, TempFail) as exc:
            yield PipeResult(label, None, exc)
