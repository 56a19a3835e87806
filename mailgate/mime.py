"""MIME helpers for ``pipeline/parse.py``: bodies, attachments, TNEF, content hash, header bytes.

Real mail is messy (unknown charsets, broken parts, winmail.dat), so every
helper here degrades to "keep the bytes, decode with replacement" rather
than raising: losing a customer's text is worse than a few odd characters.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import re
import unicodedata
import warnings
from collections.abc import Iterator
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any

from mailgate.bigparts import Lifted
from mailgate.charsets import ESCAPED_8BIT, decode_bytes, decode_words, fix_8bit
from mailgate.domain import Attachment, RawMail

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
        # what mailbox servers and readers add to a stored copy (mbox status, IMAP UIDs)
        b"status",
        b"x-status",
        b"x-keywords",
        b"x-uid",
        b"x-envelope-from",
        b"content-length",
        b"lines",
    }
)
TRANSPORT_PREFIXES = (b"x-spam-", b"x-dspam-", b"x-rspamd-")
_UNSAFE_NAME = re.compile(r"[^\w.\- ()+,=@\[\]]+", re.UNICODE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def content_hash(raw: RawMail) -> str:
    """sha256 of the mail without transport headers and with normalised line endings.

    The body is hashed a slice at a time, so a big mail costs no copy of itself.
    """
    m = _HEADER_END.search(raw)
    head, body_at = (bytes(raw[: m.start()]), m.end()) if m else (bytes(raw), len(raw))
    kept: list[bytes] = []
    keep = True
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        keep = name not in TRANSPORT_HEADERS and not name.startswith(TRANSPORT_PREFIXES)
        if keep:
            kept.append(line)
    digest = hashlib.sha256(b"\n".join(kept))
    digest.update(b"\n\n")
    end = len(raw)
    while end > body_at:  # the trailing line ends, as rstrip(b"\n") after CRLF -> LF would drop them
        if raw[end - 2 : end] == b"\r\n" and end - 2 >= body_at:
            end -= 2
        elif raw[end - 1 : end] == b"\n":
            end -= 1
        else:
            break
    view, at = memoryview(raw), body_at
    while at < end:
        stop = min(at + _SLICE, end)
        if raw[stop - 1 : stop] == b"\r" and raw[stop : stop + 1] == b"\n" and stop < end:
            stop += 1  # never split a CRLF between two slices
        digest.update(bytes(view[at:stop]).replace(b"\r\n", b"\n"))
        at = stop
    return digest.hexdigest()


_SLICE = 1 << 20


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


def decode_part(part: Message, *, release: bool = False) -> str:
    """Text of a part, whatever its declared charset, with ``\n`` line ends and no NUL characters.

    ``release``: a big body is not kept a second time in the parsed tree once read (the caller keeps
    the message for its headers only), so that it is never held three times over while decoded."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = _payload_bytes(part)
    if release:
        _release(part)
    try:
        charset = part.get_content_charset() or "utf-8"
    except Exception:  # a charset parameter the header parser cannot read
        charset = "utf-8"
    text = decode_bytes(payload, charset)
    del payload  # (a big body: one copy fewer held while the line ends are mended)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def payload_of(part: Message) -> Any:
    """The part's payload as the parser stored it: a list of parts, or the undecoded text.

    ``get_payload()`` without ``decode`` decodes 8-bit text with the part's declared charset
    on every call, and raises for a charset such as ``idna`` or one whose label holds a NUL:
    one odd label would make the whole mail unreadable. The stored value is what we need.
    """
    return getattr(part, "_payload", None)  # set by every email.message.Message


def _payload_bytes(part: Message) -> bytes:
    """The undecoded payload as bytes (8-bit input survives as surrogate escapes)."""
    payload = payload_of(part)
    if isinstance(payload, bytes):
        return payload
    return str(payload or "").encode("utf-8", "surrogateescape")


def _is_attachment(part: Message) -> bool:
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment":
        return True
    ctype = part.get_content_type()
    if ctype in ("text/plain", "text/html") and filename_of(part) is None:
        return False
    return not ctype.startswith("multipart/")


_LEAF_CONTAINERS = frozenset({"message/rfc822", "message/delivery-status", "message/global"})
_BOUNDARY_LINE = re.compile(r"^--(\S{1,70}?)(?:--)?[ \t]*\r?$", re.M)


def _recover_multipart(part: Message) -> Message | None:
    """A multipart whose declared boundary never occurs: re-read it with the boundary its body uses."""
    payload = payload_of(part)
    m = _BOUNDARY_LINE.search(payload) if isinstance(payload, str) else None
    if m is None:
        return None
    head = f'Content-Type: {part.get_content_type()}; boundary="{m.group(1)}"\n\n'.encode()
    fixed = BytesParser(policy=policy.compat32).parsebytes(head + _payload_bytes(part))
    return fixed if fixed.is_multipart() else None


def _leaf_parts(msg: Message, *, recover: bool = True) -> Iterator[Message]:
    """Leaves in order; an attached mail is one leaf, so its body never mixes into ours.
    (A stack, not recursion: parts nested thousands deep must not exhaust Python's stack.)"""
    stack: list[tuple[Message, bool]] = [(msg, recover)]
    while stack:
        part, may_recover = stack.pop()
        if part.get_content_type() in _LEAF_CONTAINERS:
            yield part
            continue
        if not part.is_multipart():
            fixed = _recover_multipart(part) if may_recover and part.get_content_maintype() == "multipart" else None
            if fixed is None:
                yield part
            else:
                stack.append((fixed, False))
            continue
        payload = payload_of(part)
        subs = [sub for sub in (payload if isinstance(payload, list) else []) if isinstance(sub, Message)]
        stack.extend((sub, may_recover) for sub in reversed(subs))


_EXTENSIONS = {"message/rfc822": ".eml", "text/plain": ".txt", "text/html": ".html", "text/rfc822-headers": ".txt"}


def _message_bytes(inner: Message) -> bytes:
    """An attached mail, written out again. A part the generator refuses (an unknown charset on 8-bit text,
    a multipart without boundary) costs that attachment's bytes, never the mail: its raw form is kept."""
    try:
        return inner.as_bytes()
    except Exception:
        pass
    try:
        return inner.as_string().encode("utf-8", "surrogateescape")
    except Exception:
        log.info("an attached mail could not be written out; the original keeps it")
        return b""


def filename_of(part: Message) -> str | None:
    """The part's file name, or None; malformed RFC 2231 parameters (``name*=x; name*0=y``) make the
    standard library raise, and that must cost the name, not the mail.

    A name written in raw 8-bit (``filename="ciële.txt"`` in UTF-8, as many clients send it) reaches
    ``get_filename`` as replacement characters; its header is decoded like any other first.
    """
    try:
        fields = {k.lower(): str(v) for k, v in part.raw_items() if k.lower() in _NAME_FIELDS}
        if any(ESCAPED_8BIT.search(v) for v in fields.values()):
            decoded = Message()
            for name, value in fields.items():
                decoded[name] = fix_8bit(value)
            part = decoded
        return part.get_filename()
    except Exception:
        return None


_NAME_FIELDS = ("content-disposition", "content-type")


_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")


def _attachment(part: Message, index: int, lifted: Lifted | None = None) -> Attachment:
    ctype = part.get_content_type()
    if not _CONTENT_TYPE.fullmatch(ctype):  # control characters, folding or junk: stored and relayed, so never
        ctype = "application/octet-stream"
    direct = lifted.data_of(part) if lifted is not None else None
    if direct is not None:
        data = direct
    elif ctype == "message/rfc822" or isinstance(payload_of(part), list):
        inner = payload_of(part)
        first = inner[0] if isinstance(inner, list) and inner else None
        data = _message_bytes(first if isinstance(first, Message) else part)
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else _payload_bytes(part)
    raw_name = filename_of(part)
    try:
        raw_name = decode_words(fix_8bit(raw_name)) if raw_name else raw_name  # RFC 2047 words, stray 8-bit
    except Exception:
        raw_name = None
    name = sanitize_filename(raw_name, f"attachment-{index}{_EXTENSIONS.get(ctype, '.bin')}")
    inline = (part.get_content_disposition() or "") == "inline"
    return Attachment(name, ctype, data, hashlib.sha256(data).hexdigest(), inline)


def _tnef_name(inner: Any, index: int) -> str:
    try:  # the long (Unicode) name if Outlook stored one, else the 8.3 title
        name = inner.long_filename()
    except Exception:
        name = None
    if isinstance(name, bytes):
        name = name.decode("cp1252", "replace")
    if not isinstance(name, str):
        name = None
    return sanitize_filename(name.replace("\x00", "") if name else None, f"winmail-{index}.bin")


def _tnef(att: Attachment) -> list[Attachment]:
    """Unpack winmail.dat so Outlook users' files are not hidden in an opaque blob."""
    try:
        from tnefparse import TNEF

        with warnings.catch_warnings():  # tnefparse uses APIs newer Pythons deprecate
            warnings.simplefilter("ignore")
            tnef = TNEF(att.data)
        out = []
        for i, inner in enumerate(tnef.attachments, 1):
            data = inner.data if isinstance(inner.data, bytes) else bytes(inner.data)
            name = _tnef_name(inner, i)
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            out.append(Attachment(name, ctype, data, hashlib.sha256(data).hexdigest()))
    except Exception as exc:
        log.info("winmail.dat could not be unpacked (%s); kept as is", exc)
        return [att]
    return out or [att]


def _body_kind(part: Message) -> str | None:
    if part.get_content_maintype() == "multipart":  # a multipart left without parts: its words are the body
        return "text"
    ctype = part.get_content_type()
    if ctype in ("text/plain", "text/html") and not _is_attachment(part):
        return "text" if ctype == "text/plain" else "html"
    return None


def bodies_and_attachments(
    msg: Message, lifted: Lifted | None = None
) -> tuple[str | None, str | None, list[Attachment], list[str]]:
    """(text, html, attachments, dsn_final_recipients) from any message structure.

    ``lifted``: the large base64 bodies that went around the parser (``bigparts``)."""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    dsn: list[str] = []
    for index, part in enumerate(_leaf_parts(msg), 1):
        if part.get_content_type() == "message/delivery-status":
            dsn.extend(r for r in _final_recipients(part) if r not in dsn)
            continue
        kind = _body_kind(part)
        if kind == "text":
            body = decode_part(part, release=True)
            text = body if text is None else f"{text}\n{body}"
            continue
        if kind == "html" and html is None:
            html = decode_part(part, release=True)
            continue
        att = _attachment(part, index, lifted)
        if att.content_type == "application/ms-tnef" or att.filename.lower() == "winmail.dat":
            attachments.extend(_tnef(att))
        else:
            attachments.append(att)
    text = _kept(text, "message.txt", "text/plain", attachments)
    html = _kept(html, "message.html", "text/html", attachments)
    return text, html, attachments, dsn


TEXT_KEPT = 1 << 20  # characters of a body kept as the message's text; the whole body is attached


def _release(part: Message) -> None:
    payload = payload_of(part)
    if isinstance(payload, str) and len(payload) > TEXT_KEPT:
        part.set_payload("")


def _kept(body: str | None, name: str, ctype: str, attachments: list[Attachment]) -> str | None:
    """A body of more than TEXT_KEPT characters (a pasted log, a generated report) is kept whole as an
    attachment, and its first TEXT_KEPT characters as the text every later stage works on (threading,
    quotes, signature, the stored message, notifications): a 25 MB body otherwise cost each of them
    its size again, in the pipeline and in the sender. Nothing is lost: the attachment and the raw
    mail hold all of it."""
    if body is None or len(body) <= TEXT_KEPT:
        return body
    data = body.encode("utf-8", "replace")
    attachments.append(Attachment(name, ctype, data, hashlib.sha256(data).hexdigest()))
    note = (f"[The text goes on for {len(body) - TEXT_KEPT:,} more characters; "
            f"the whole text is attached as {name}.]")
    cut = body[:TEXT_KEPT]
    return f"{cut}<p>{note}</p>" if ctype == "text/html" else f"{cut}\n\n{note}"


def _final_recipients(part: Message) -> list[str]:
    """Final-Recipient (or Original-Recipient) of each per-recipient block of a DSN that failed for good.

    A block whose Action is ``delayed`` (or ``delivered``, ``relayed``, ``expanded``) or whose Status is
    4.x.x is a warning, not a failure: its recipient may still get the mail, so it is not listed.
    """
    out = []
    payload = payload_of(part)
    blocks = payload if isinstance(payload, list) else []
    for block in blocks:
        if not isinstance(block, Message):
            continue
        try:
            value = block.get("Final-Recipient") or block.get("Original-Recipient")
            action = str(block.get("Action", "failed")).strip().lower()
            status = str(block.get("Status", "5")).strip()
        except Exception:  # an unparsable field: the text search below may still find it
            continue
        if action != "failed" or status.startswith("4"):
            continue
        if value and ";" in str(value):
            address = _report_address(str(value).split(";", 1)[1])
            if address:
                out.append(address)
    if not blocks:  # the parser kept the report as text
        for m in re.finditer(r"(?im)^Final-Recipient:\s*[^;]+;\s*<?([^>\s]+)>?", decode_part(part)):
            address = _report_address(m.group(1))
            if address:
                out.append(address)
    return out


_NOT_IN_ADDRESS = re.compile(r"[\x00-\x20\x7f<>\"]")


def _report_address(value: str) -> str | None:
    """A recipient named in a report, as one clean lower-case address (a report is the sender's words)."""
    address = _NOT_IN_ADDRESS.sub("", value).lower()
    return address if "@" in address and len(address) <= 254 else None
