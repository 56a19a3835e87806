"""Pipe intake for MTA aliases and batch imports: a file, stdin, an mbox or a Maildir.

Each message is stored by the same ``ingest`` as the listener. Exit codes
are chosen in ``cli.py``; this module only reports what happened to each.
"""

from __future__ import annotations

import mailbox
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailgate.domain import Envelope, Outcome
from mailgate.errors import Rejected, TempFail
from mailgate.pipeline.ingest import Context, ingest

# mbox writers turn a body line "From ..." into ">From ..." (and mboxrd ">From" into ">>From"); undo one level.
_MBOX_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)


@dataclass(frozen=True)
class PipeResult:
    source: str
    outcome: Outcome | None
    error: Rejected | TempFail | None


def _without_from_line(raw: bytes) -> bytes:
    """Postfix (local(8)) and others put a ``From sender date`` line before a piped mail.

    It is envelope, not content, and its time stamp changes on every delivery attempt:
    kept, it would make a retried delivery look like a different mail to dedupe.
    """
    if raw.startswith(b"From "):
        _, _, rest = raw.partition(b"\n")
        return rest
    return raw


def messages(name: str) -> Iterator[tuple[str, bytes]]:
    """Each mail of a file, stdin (-), an mbox or a Maildir, one at a time (an archive is never read whole)."""
    if name == "-":
        yield "stdin", _without_from_line(sys.stdin.buffer.read())
        return
    path = Path(name)
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        box = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(box.keys()):
            with box.get_file(key) as fh:
                yield f"{path}/{key}", fh.read()
        return
    with path.open("rb") as fh:
        head = fh.read(5)
    if head == b"From ":
        mbox = mailbox.mbox(path, create=False)
        for i, key in enumerate(mbox.keys(), 1):  # the stored bytes, not a re-serialisation of them
            yield f"{path}#{i}", _MBOX_QUOTED.sub(rb"\1", mbox.get_bytes(key))
        return
    yield str(path), path.read_bytes()


def run(names: list[str], ctx: Context, *, sender: str | None = None, recipient: str | None = None) -> list[PipeResult]:
    """Store every message; one failure does not stop the rest of an mbox."""
    # An MTA passes the envelope sender in SENDER; set but empty is the null sender of a bounce
    # (written "<>", as SMTP's MAIL FROM:<>), while no SENDER at all means we do not know.
    given = sender if sender is not None else os.environ.get("SENDER")
    mail_from = "" if given is None else ("<>" if given.strip("<> ") == "" else given)
    rcpt = recipient or os.environ.get("ORIGINAL_RECIPIENT") or os.environ.get("RECIPIENT")
    results = []
    limit = ctx.config.main.intake.smtp.max_message_size if ctx.config.main.intake.smtp else None
    for name in names or ["-"]:
        try:
            items = list(messages(name))
        except OSError as exc:
            results.append(PipeResult(name, None, TempFail(f"{name}: {exc.strerror or exc}")))
            continue
        for label, raw in items:
            if limit is not None and len(raw) > limit:
                results.append(PipeResult(label, None, Rejected(f"message too large ({len(raw)} > {limit} bytes)")))
                continue
            env = Envelope(
                mail_from=mail_from,
                rcpt_tos=(rcpt,) if rcpt else (),
                source="pipe",
                received_at=ctx.clock.now(),
            )
            try:
                results.append(PipeResult(label, ingest(raw, env, ctx), None))
            except (Rejected, TempFail) as exc:
                results.append(PipeResult(label, None, exc))
    return results
