"""MIME walking helpers for ``pipeline/parse.py``: bodies, attachments, TNEF, content hash.

Real mail is messy (unknown charsets, broken parts, winmail.dat), so every
helper here degrades to "keep the bytes, decode with replacement" rather
than raising: losing a customer's text is worse than a few odd characters.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterator
from email.message import EmailMessage, Message

from mailgate.domain import Attachment

log = logging.getLogger(__name__)

# Headers added in transit: excluded from the content hash, so one mail that
# reaches us by two routes (two support addresses, SMTP and IMAP) hashes alike.
TRANSPORT_HEADERS = frozenset(
    {
        b"received",
        b"return-path",
        b"delivered-to",
        b"x-original-to",
        b"x-delivered-to",
        b"envelope-to",
        b"x-envelope-to",
        b"x-received",
        b"authentication-results",
        b"received-spf",
        b"arc-seal",
        b"arc-message-signature",
        b"arc-authentication-results",
        b"x-spam-status",
        b"x-spam-score",
        b"x-spam-level",
        b"x-spam-checker-version",
        b"x-virus-scanned",
        b"x-ms-exchange-organization-authas",
        b"x-mailgate-loop",
    }
)
_UNSAFE_NAME = re.compile(r"[^\w.\- ()+,=@\[\]]+", re.UNICODE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def content_hash(raw: bytes) -> str:
    """sha256 of the mail without transport headers and with normalised line endings."""
    m = _HEADER_END.search(raw)
    head, body = (raw[: m.start()], raw[m.end() :]) if m else (raw, b"")
    kept: list[bytes] = []
    keep = True
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        keep = name not in TRANSPORT_HEADERS
        if keep:
            kept.append(line)
    digest = hashlib.sha256(b"\n".join(kept))
    digest.update(b"\n\n")
    digest.update(body.replace(b"\r\n", b"\n").rstrip(b"\n"))
    return digest.hexdigest()


def sanitize_filename(name: str | None, fallback: str) -> str:
    """A name safe on any filesystem and in any header: no paths, no control characters."""
    if not name:
        return fallback
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    if not name or name in (".", ".."):
        return fallback
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:190] + dot + ext[:9]) if dot and len(ext) < 10 else name[:200]
    return name


def decode_part(part: Message) -> str:
    """Text of a part, whatever its declared charset."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload() or "")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # unknown charset name: try the common ones
        for fallback in ("utf-8", "cp1252"):
            try:
                return payload.decode(fallback)
            except UnicodeDecodeError:
                continue
        return payload.decode("latin-1")


def _is_attachment(part: Message) -> bool:
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment":
        return True
    ctype = part.get_content_type()
    if ctype in ("text/plain", "text/html") and part.get_filename() is None:
        return False
    return not ctype.startswith("multipart/")


_LEAF_CONTAINERS = frozenset({"message/rfc822", "message/delivery-status", "message/global"})


def _leaf_parts(msg: Message) -> Iterator[Message]:
    """Leaves in order; an attached mail is one leaf, so its body never mixes into ours."""
    if msg.get_content_type() in _LEAF_CONTAINERS or not msg.is_multipart():
        yield msg
        return
    payload = msg.get_payload()
    for sub in payload if isinstance(payload, list) else []:
        if isinstance(sub, Message):
            yield from _leaf_parts(sub)


def _attachment(part: Message, index: int) -> Attachment:
    ctype = part.get_content_type()
    if ctype == "message/rfc822" or isinstance(part.get_payload(), list):
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        data = first.as_bytes() if isinstance(first, Message) else part.as_bytes()
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else str(part.get_payload() or "").encode()
    try:
        raw_name = part.get_filename()
    except Exception:  # malformed RFC 2231 parameters
        raw_name = None
    ext = {"message/rfc822": ".eml", "text/plain": ".txt", "text/html": ".html"}.get(ctype, ".bin")
    name = sanitize_filename(raw_name, f"attachment-{index}{ext}")
    inline = (part.get_content_disposition() or "") == "inline"
    return Attachment(name, ctype, data, hashlib.sha256(data).hexdigest(), inline)


def _tnef(att: Attachment) -> list[Attachment]:
    """Unpack winmail.dat so Outlook users' files are not hidden in an opaque blob."""
    try:
        from tnefparse import TNEF

        tnef = TNEF(att.data)
    except Exception as exc:
        log.info("winmail.dat could not be unpacked (%s); kept as is", exc)
        return [att]
    out = []
    for i, inner in enumerate(tnef.attachments):
        data = inner.data if isinstance(inner.data, bytes) else bytes(inner.data)
        name = inner.long_filename() if hasattr(inner, "long_filename") else inner.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        name = sanitize_filename(name, f"winmail-{i}.bin")
        out.append(Attachment(name, "application/octet-stream", data, hashlib.sha256(data).hexdigest()))
    return out or [att]


def bodies_and_attachments(msg: EmailMessage) -> tuple[str | None, str | None, list[Attachment], list[str]]:
    """(text, html, attachments, dsn_final_recipients) from any message structure."""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    dsn: list[str] = []
    for index, part in enumerate(_leaf_parts(msg), 1):
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            dsn.extend(_final_recipients(part))
            continue
        if ctype in ("text/plain", "text/html") and not _is_attachment(part):
            body = decode_part(part)
            if ctype == "text/plain":
                text = body if text is None else f"{text}\n{body}"
                continue
            if html is None:
                html = body
                continue
        att = _attachment(part, index)
        if att.content_type == "application/ms-tnef" or att.filename.lower() == "winmail.dat":
            attachments.extend(_tnef(att))
        else:
            attachments.append(att)
    return text, html, attachments, dsn


def _final_recipients(part: Message) -> list[str]:
    out = []
    payload = part.get_payload()
    blocks = payload if isinstance(payload, list) else []
    for block in blocks:
        if not isinstance(block, Message):
            continue
        value = block.get("Final-Recipient") or block.get("Original-Recipient")
        if value and ";" in str(value):
            out.append(str(value).split(";", 1)[1].strip().strip("<>").lower())
    if not blocks:
        for m in re.finditer(r"(?im)^Final-Recipient:\s*[^;]+;\s*<?([^>\s]+)>?", decode_part(part)):
            out.append(m.group(1).lower())
    return out
