"""Outlook conversation headers (``Thread-Index``), so Outlook groups a ticket's mails in one thread.

Format (MS-OXOMSG 2.2.1.3, as desktop Outlook writes it): a 22-byte header
block -- the 6 most significant bytes of a FILETIME and a 16-byte GUID --
then one 5-byte child block per reply: 1 bit delta code, 31 bits of time
delta, 4 random bits, 4 sequence bits. A reply extends its parent's index
by one child block; that is how Outlook places it in the conversation.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import UTC, datetime

_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
HEADER_LEN = 22
CHILD_LEN = 5


def filetime(when: datetime) -> int:
    """100-nanosecond intervals since 1601-01-01 UTC."""
    delta = when.astimezone(UTC) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**7 + delta.microseconds * 10


def root(when: datetime, guid: bytes) -> bytes:
    if len(guid) != 16:
        raise ValueError("conversation GUID must be 16 bytes")
    return filetime(when).to_bytes(8, "big")[:6] + guid


def child(parent: bytes, when: datetime, random_bits: int | None = None) -> bytes:
    """``parent`` extended by one child block for a message sent at ``when``."""
    header_time = int.from_bytes(parent[:6] + b"\0\0", "big")
    diff = max(0, filetime(when) - header_time)
    code, delta = (0, diff >> 18) if diff < (1 << 49) else (1, diff >> 23)
    rand = secrets.randbelow(16) if random_bits is None else random_bits & 0xF
    value = (code << 39) | ((delta & 0x7FFFFFFF) << 8) | (rand << 4)
    return parent + value.to_bytes(CHILD_LEN, "big")


def decode(header_value: str | None) -> bytes | None:
    """A received Thread-Index as bytes, or None when it is absent or malformed."""
    if not header_value:
        return None
    try:
        data = base64.b64decode("".join(header_value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(data) < HEADER_LEN or (len(data) - HEADER_LEN) % CHILD_LEN:
        return None
    return data


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
