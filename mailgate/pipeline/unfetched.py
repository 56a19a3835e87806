"""A mail the source would not hand over whole: recorded from its header alone.

An IMAP mailbox can hold a mail far bigger than ``max_message_size`` (a scan
of a hundred attachments), or one the server fails to deliver. Fetching it
would hold up, or forever block, every mail behind it, so the poller fetches
only its header block and asks this stage to keep a record of it: an inbound
row in quarantine with the reason, who sent it, its subject and Message-ID,
and where on the server the mail now waits. The bytes are not kept, so
``quarantine reprocess`` says where the mail is instead of replaying it.

The record is written once per mail: its hash is taken over the header block
and the size, so seeing the same mail again (a move that failed, a second
daemon after a takeover) finds the first record instead of adding another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import Any

from mailgate.domain import Envelope, InboundStatus
from mailgate.pipeline import spool as spooling
from mailgate.storage.store import Store

HEAD_BYTES = 64 * 1024  # of the header block fetched: enough for the fields shown, bounded whatever the mail


@dataclass(frozen=True, slots=True)
class Unfetched:
    """What is known of a mail that was not fetched, and where it went."""

    head: bytes
    size: int
    reason: str  # "too large: ..." or "could not be fetched: ..."
    left_in: str  # the server folder (and how it is marked) where the mail now waits
    where: bytes = b""  # mailbox, UIDVALIDITY and UID: tells apart mails the server sends no header of

    def fields(self) -> dict[str, str]:
        """From, Subject, Message-ID and Date of the header block, decoded; a broken field reads as ''."""
        try:
            msg = BytesHeaderParser(policy=default_policy).parsebytes(self.head)
        except Exception:
            return {}
        out: dict[str, str] = {}
        for name in ("From", "Subject", "Message-ID", "Date"):
            try:
                value = msg.get(name)
                out[name.lower()] = " ".join(str(value).split())[:500] if value is not None else ""
            except Exception:  # a malformed encoded word must not cost the record
                out[name.lower()] = ""
        return out

    def sha256(self) -> str:
        if self.head:  # the same mail moved back (under a new UID) is still the same mail
            return hashlib.sha256(b"unfetched\0%d\0" % self.size + self.head).hexdigest()
        return hashlib.sha256(b"unfetched\0%d\0" % self.size + self.where).hexdigest()


@dataclass(frozen=True, slots=True)
class Recorded:
    inbound_id: int
    new: bool  # False: this mail had been recorded before (nothing was written)
    fields: dict[str, str]


def record(store: Store, mail: Unfetched, envelope: Envelope) -> Recorded:
    """Keep the quarantine record of a mail that was not fetched (once per mail)."""
    fields = mail.fields()
    message_id = fields.get("message-id") or None
    sha = mail.sha256()
    earlier = store.duplicate_of(message_id, sha)
    if earlier is not None:
        return Recorded(earlier[0], False, fields)
    addresses = getaddresses([fields.get("from", "")])
    sender = addresses[0][1].lower() if addresses and "@" in addresses[0][1] else ""
    spooled = spooling.spool(store, b"", envelope, sha)
    decision: dict[str, Any] = {
        "unfetched": {
            "reason": mail.reason,
            "size": mail.size,
            "left_in": mail.left_in,
            "from": fields.get("from", ""),
            "subject": fields.get("subject", ""),
            "date": fields.get("date", ""),
        },
        "outcome": {"status": InboundStatus.QUARANTINED.value, "reason": mail.reason},
    }
    store.update_inbound(spooled.id, {"size": mail.size, "mail_from": (envelope.mail_from or sender)[:500]})
    spooling.finish(
        store, spooled, InboundStatus.QUARANTINED, envelope.received_at, reason=mail.reason,
        message_id=message_id, drop_raw=True, decision=decision,
    )
    return Recorded(spooled.id, True, fields)
