"""Turn an outbox row into RFC 5322 bytes at send time.

Header values are stripped of CR/LF before they reach ``email``, so no
customer-controlled text (subject, display name) can smuggle in a header.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP, SMTPUTF8, Compat32
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any

from mailgate.storage.blobs import BlobStore
from mailgate.storage.model import Outbox

LOOP_HEADER = "X-Mailgate-Loop"


class _Wire(Compat32):
    """compat32 with CRLF, and a shortcut for the usual header: one line of printable ASCII, single
    spaces, short enough not to fold. ``Header`` would split and rejoin it into the same line at
    several times the cost of the rest of the mail; tests compare the two on many values."""

    def fold_binary(self, name: str, value: str) -> bytes:  # or a Header, which takes the long way
        if (
            type(value) is str
            and len(name) + 2 + len(value) <= (self.max_line_length or 0)
            and value.isascii()
            and value.isprintable()
            and "  " not in value
            and value == value.strip()
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


WIRE = _Wire(linesep="\r\n")


def _header(value: str) -> Any:
    """ASCII as is; anything else as RFC 2047 words (``Header``, which compat32 messages accept)."""
    value = _clean(value)
    return value if value.isascii() else Header(value, "utf-8")


def _address(value: str) -> str:
    name, address = parseaddr(_clean(value))
    if name.isascii():
        return _clean(value)
    return formataddr((name, address), charset="utf-8")


def _compose_fast(row: Outbox, loop_value: str, now: datetime) -> bytes:
    """The common case (ASCII addresses, no attachments) with the ``compat32`` classes: the same mail
    as the general path below at a fraction of the cost, since ``policy.SMTP`` parses every header it sets."""
    text = MIMEText(row.text, "plain", "utf-8")
    if row.html:
        # Both parts are base64 (utf-8), whose lines never start with "--": a random boundary cannot
        # collide, and the generator is spared compiling a regex per mail to check that it does not.
        msg: MIMEMultipart | MIMEText = MIMEMultipart("alternative", boundary=f"mailgate-{secrets.token_hex(12)}")
        msg.attach(text)
        msg.attach(MIMEText(row.html, "html", "utf-8"))
    else:
        msg = text
    _set_headers(msg, row, loop_value, now, _address, _header)
    return msg.as_bytes(policy=WIRE)


def _set_headers(
    msg: Message,
    row: Outbox,
    loop_value: str,
    now: datetime,
    address: Callable[[str], Any],
    header: Callable[[str], Any],
) -> None:
    msg["From"] = address(row.mail_from)
    msg["To"] = ", ".join(address(r) for r in row.recipients)
    msg["Subject"] = header(row.subject)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = _clean(row.message_id)
    for name, value in row.headers.items():
        msg[name] = header(value)
    msg["X-Auto-Response-Suppress"] = "All"
    msg[LOOP_HEADER] = loop_value


def _clean(value: str) -> str:
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())


def compose(row: Outbox, loop_value: str, now: datetime, blobs: BlobStore | None = None) -> bytes:
    internationalised = not all(a.isascii() for a in (parseaddr(row.mail_from)[1], *row.recipients))
    if not internationalised and not row.attachments:
        return _compose_fast(row, loop_value, now)
    msg = EmailMessage(policy=SMTPUTF8 if internationalised else SMTP)  # RFC 6531 addresses stay raw UTF-8
    _set_headers(msg, row, loop_value, now, _clean, _clean)
    msg.set_content(row.text)
    if row.html:
        msg.add_alternative(row.html, subtype="html")
    for sha256, filename, content_type in row.attachments or []:  # relayed from an agent's reply
        if blobs is None:
            raise RuntimeError("attachments to relay but no attachment store")
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(
            blobs.get(sha256),
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=_clean(filename),
        )
    return msg.as_bytes()
