"""The mails of a file, stdin, an mbox or a Maildir, and the envelope an MTA's pipe gives them.

Kept free of the pipeline's imports: ``ingest`` reads mail through it both when it stores the mail
itself and when it hands the mail to a running ``serve`` (where a whole second of imports would be the
cost of every delivery).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

# mbox writers turn a body line "From ..." into ">From ..." (and mboxrd ">From" into ">>From"); undo one level.
_MBOX_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)


def without_from_line(raw: bytes) -> bytes:
    """Postfix (local(8)) and others put a ``From sender date`` line before a piped mail.

    It is envelope, not content, and its time stamp changes on every delivery attempt:
    kept, it would make a retried delivery look like a different mail to dedupe.
    """
    if raw.startswith(b"From "):
        _, _, rest = raw.partition(b"\n")
        return rest
    return raw


def messages(name: str) -> Iterator[tuple[str, bytes]]:
    """Each mail of a file, stdin (-), an mbox or a Maildir, one at a time (an archive is never read whole:
    an mbox is indexed by offsets, then each mail is read when its turn comes)."""
    if name == "-":
        yield "stdin", without_from_line(sys.stdin.buffer.read())
        return
    import mailbox  # (only archives need it: a piped mail does not pay its import)

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


def envelope(sender: str | None, recipient: str | None) -> tuple[str, str | None]:
    """(MAIL FROM, recipient) from the options or what the MTA puts in the environment.

    An MTA passes the envelope sender in SENDER; set but empty is the null sender of a bounce
    (written "<>", as SMTP's MAIL FROM:<>), while no SENDER at all means we do not know ("").
    """
    given = sender if sender is not None else os.environ.get("SENDER")
    mail_from = "" if given is None else ("<>" if given.strip("<> ") == "" else given)
    return mail_from, recipient or os.environ.get("ORIGINAL_RECIPIENT") or os.environ.get("RECIPIENT")


def each_mail(names: list[str]) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(label, mail, problem) for every mail of every name, read as it is reached; an unreadable file
    or archive gives one entry with its problem and the rest go on."""
    for name in names or ["-"]:
        try:
            yield from ((label, raw, None) for label, raw in messages(name))
        except OSError as exc:
            yield name, None, f"{name}: {exc.strerror or exc}"
