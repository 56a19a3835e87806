"""Stage 2: bytes -> ParsedMail with Python's ``email`` package; ParseError -> quarantine.

The MIME structure is read by ``email``'s parser with the ``compat32`` policy and
headers are decoded here from their raw text (RFC 2047 words, then undeclared
8-bit bytes as UTF-8 or Windows-1252). ``policy.default`` builds a structured
object for every header it is asked about, which made it the single largest cost
of ingest (about 1 ms a mail); the raw path is several times cheaper, and it
never raises on a malformed header, so one broken header never costs the mail.
Ids and addresses too long for any real mail are dropped, so whatever comes out
can be stored as text by any database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

from mailgate import bigparts
from mailgate.addresslist import addresses
from mailgate.charsets import decode_words, fix_8bit
from mailgate.domain import Address, ParsedMail, RawMail
from mailgate.errors import ParseError
from mailgate.htmltext import html_to_text, plain_text, sanitize_html, too_complex
from mailgate.mime import bodies_and_attachments, content_hash, payload_of
from mailgate.pipeline import bounds
from mailgate.pipeline.quotes import split_new_text
from mailgate.pipeline.signature import strip_signature

_PARSER = BytesParser(policy=policy.compat32)
_MSGID = re.compile(r"<[^<>\s\x00-\x1f\x7f-\x9f]+>")  # no space or control character in an id we keep
AUTO_HEADERS = (
    "auto-submitted",
    "x-autoreply",
    "x-autorespond",
    "x-auto-response-suppress",
    "precedence",
    "list-id",
    "list-unsubscribe",
    "return-path",
    "x-failed-recipients",
    "x-loop",
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line separators
MAX_ID, MAX_REFERENCES, MAX_ADDRESS, MAX_NAME = 998, 100, 254, 200


def _raw(msg: Message, name: str) -> list[str]:
    name = name.lower()
    return [fix_8bit(str(v)) for k, v in msg.raw_items() if k.lower() == name]


def _header(msg: Message, name: str) -> str | None:
    """The first such header, decoded (encoded words, then stray 8-bit bytes)."""
    raw = _raw(msg, name)
    return decode_words(raw[0]) if raw else None


def _one_line(value: str | None) -> str:
    return re.sub(r"\s+", " ", _CONTROL.sub("", value or "")).strip()


def _addresses(msg: Message, name: str) -> tuple[Address, ...]:
    out = []
    for display, email in addresses(_raw(msg, name)):
        email = _one_line(email).replace(" ", "").lower()
        if "@" in email and len(email) <= MAX_ADDRESS:
            out.append(Address(email, _one_line(decode_words(display))[:MAX_NAME]))
    return tuple(out)


def _ids(value: str | None, *, bare: bool = False) -> tuple[str, ...]:
    found = tuple(i for i in _MSGID.findall(value or "") if len(i) <= MAX_ID)
    if not found and bare and value and "@" in value and len(value.split()) == 1 and len(value) < MAX_ID:
        wrapped = f"<{value.strip().strip('<>')}>"  # "Message-ID: id@host" from a sloppy client
        return (wrapped,) if _MSGID.fullmatch(wrapped) else ()
    return found


def _date(msg: Message) -> datetime | None:
    value = _header(msg, "date")
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except Exception:  # ValueError, OverflowError, ...: an unusable date is no date
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _strip_private_headers(msg: Message) -> str | None:
    """Remove X-Mailgate-* so nobody can forge them; return the loop token for classify."""
    loop = None
    names = {k for k in msg if k.lower().startswith("x-mailgate-")}
    for name in names:
        if name.lower() == "x-mailgate-loop":
            loop = _header(msg, name)
        del msg[name]
    return loop


def _depth(msg: Message) -> int:
    """How deep parts nest (1: a single-part mail), without recursion."""
    deepest, stack = 0, [(msg, 1)]
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        payload = payload_of(part)
        if isinstance(payload, list):
            stack.extend((sub, depth + 1) for sub in payload if isinstance(sub, Message))
    return deepest


def parse(raw: RawMail, limits: bounds.Limits | None = None) -> ParsedMail:
    """``limits`` (``intake.limits``): a mail over them raises ``OverLimit`` before the costly work."""
    if not raw or raw.isspace():  # (strip() would copy a big mail held in a bytearray)
        raise ParseError("empty message")
    if limits is not None:
        bounds.check(raw, limits)
    try:
        given, lifted = bigparts.lift(raw)
        msg = _PARSER.parsebytes(given)
        del given
        if lifted is not None:
            lifted.restore(msg)
        if not msg.keys():
            raise ParseError("no headers found: not an RFC 5322 message")
        if limits is not None:
            bounds.check_depth(_depth(msg), limits)
        loop_token = _strip_private_headers(msg)
        text, html, attachments, dsn = bodies_and_attachments(msg, lifted)
        raw_headers = tuple((k, fix_8bit(str(v)).replace("\x00", "")) for k, v in msg.raw_items())
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"unreadable MIME structure: {exc!r}") from exc
    safe_html = None if not html or too_complex(html) else sanitize_html(html)
    if text is None or (not text.strip() and html):  # HTML too complex to sanitise is kept as its words only
        text = html_to_text(safe_html) if safe_html is not None else plain_text(html or "")
    mids = _ids(_header(msg, "message-id"), bare=True)
    from_list = _addresses(msg, "from")
    auto = tuple((name, _one_line(v)) for name in AUTO_HEADERS if (v := _header(msg, name)) is not None)
    if dsn:
        auto = (*auto, ("x-mailgate-dsn-recipients", ",".join(dsn)))
    cut = split_new_text(text)
    new_text = strip_signature(cut)
    unsigned = new_text if cut == text.strip() else ""  # else made only if a ticket is opened with it (apply)
    return ParsedMail(
        message_id=mids[0] if mids else None,
        sha256=content_hash(raw),
        subject=_one_line(_header(msg, "subject")),
        from_addr=from_list[0] if from_list else None,
        to=_addresses(msg, "to"),
        cc=_addresses(msg, "cc"),
        reply_to=_addresses(msg, "reply-to"),
        in_reply_to=_ids(_header(msg, "in-reply-to")),
        references=_ids(_header(msg, "references"))[-MAX_REFERENCES:],
        date=_date(msg),
        text=text,
        html=safe_html,
        new_text=new_text,
        unsigned=unsigned,
        attachments=tuple(attachments),
        auto_headers=auto,
        content_type=msg.get_content_type(),
        defects=tuple(type(d).__name__ for d in msg.defects),
        loop_token=loop_token,
        raw_headers=raw_headers,
        sender=next(iter(_addresses(msg, "sender")), None),
    )
