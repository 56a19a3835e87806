"""Stage 3: a re-delivered mail (same Message-ID, same content) is stored once.

Runs right after parse so a re-fetched bounce or auto-reply stops here too.
The content hash ignores transport headers (see ``mime.content_hash``), so
the same mail via SMTP and IMAP, or to two support addresses, counts once.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.domain import ParsedMail
from mailgate.storage.store import Store


@dataclass(frozen=True, slots=True)
class Duplicate:
    inbound_id: int
    ticket_id: int | None


def find_duplicate(store: Store, parsed: ParsedMail) -> Duplicate | None:
    earlier = store.duplicate_of(parsed.message_id, parsed.sha256)
    return Duplicate(*earlier) if earlier else None
