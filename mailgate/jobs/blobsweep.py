"""Deleting attachment files that nothing needs any more.

Files are shared by content: the same PDF sent to two tickets is one file, so a purge frees a hash and
the file goes only when no attachment row still names that hash and no outbox row that may still be
sent carries it. Each daemon has its own ``state_dir``: the daemon (or command) that purged deletes its
own copy at once, and every daemon's retention job sweeps its own folder for files no row needs, so
the copies elsewhere follow within ``retention.run_every``.

A file younger than ``FRESH`` is never swept: intake writes the file before its transaction commits,
and a sweep in between would see no row. A file deleted anyway (a mail with the same attachment stored
at the very moment its last other user was purged) is re-derived from that mail's raw bytes when needed
(``BlobStore`` recovers it), as for a file lost in a crash.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Set
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgate.storage.blobs import BlobStore
from mailgate.storage.db import Database
from mailgate.storage.model import AttachmentRow, Outbox

FRESH = timedelta(hours=1)
_HASH = re.compile(r"^[0-9a-f]{64}$")
_MAY_BE_SENT = ("pending", "sending", "failed")


def needed(session: Session, hashes: Iterable[str], ignoring: Set[int] = frozenset()) -> set[str]:
    """Of ``hashes``, those some attachment row (but the ``ignoring`` ones) or unsent outbox row still names."""
    wanted = [h for h in set(hashes) if h]
    found: set[str] = set()
    for at in range(0, len(wanted), 500):
        rows = session.execute(
            select(AttachmentRow.id, AttachmentRow.sha256).where(AttachmentRow.sha256.in_(wanted[at : at + 500]))
        )
        found |= {sha for row_id, sha in rows if row_id not in ignoring}
    if wanted:
        for (attachments,) in session.execute(select(Outbox.attachments).where(Outbox.status.in_(_MAY_BE_SENT))):
            found |= {a[0] for a in attachments or [] if a and a[0] in wanted}
    return found


def delete_unneeded(db: Database, blobs: BlobStore, hashes: Iterable[str]) -> int:
    """Delete this daemon's files of ``hashes`` that no row needs (after the purge committed)."""
    hashes = set(hashes)
    if not hashes:
        return 0
    with db.reader() as session:
        keep = needed(session, hashes)
    return sum(_unlink(blobs.path(h)) for h in hashes - keep)


def would_free(db: Database, blobs: BlobStore, hashes: Iterable[str], purged: Set[int]) -> int:
    """For a dry run, whose purges were rolled back: the files here that purging the ``purged`` rows frees."""
    hashes = set(hashes)
    with db.reader() as session:
        keep = needed(session, hashes, purged)
    return sum(1 for h in hashes - keep if blobs.path(h).exists())


def sweep(db: Database, blobs: BlobStore, *, batch: int = 500) -> int:
    """Delete every file of this state_dir no row needs; returns how many."""
    deleted = 0
    for chunk in _chunks(_old_files(blobs.root), batch):
        with db.reader() as session:
            keep = needed(session, chunk)
        deleted += sum(_unlink(blobs.path(h)) for h in chunk if h not in keep)
    return deleted


def _old_files(root: Path) -> Iterator[str]:
    if not root.is_dir():
        return
    cutoff = time.time() - FRESH.total_seconds()
    for path in root.glob("??/??/*"):
        if _HASH.match(path.name):
            try:
                if path.stat().st_mtime < cutoff:
                    yield path.name
            except FileNotFoundError:
                continue


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _unlink(path: Path) -> int:
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1
