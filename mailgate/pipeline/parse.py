"""Stage 2: bytes -> ParsedMail with ``email`` and ``policy.default``; ParseError -> quarantine.

Every header read goes through ``_header``, which falls back to the raw value
when the structured parser chokes, so one broken header never costs the mail.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from mailgate.domain import Address, ParsedMail
from mailgate.errors import ParseError
from mailgate.htmltext import html_to_text, sanitize_html
from mailgate.mime import bodies_and_attachments, content_hash
from mailgate.pipeline.quotes import split_new_text

_PARSER = BytesParser(policy=policy.default)
_MSGID = re.compile(r"<[^<>\s]+>")
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


def _header(msg: EmailMessage, name: str) -> str | None:
    try:
        value = msg.get(name)
    except Exception:  # structured parser failed: use the raw text, decoded leniently
        raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
        if raw is None:
            return None
        try:
            return str(make_header(decode_header(raw)))
        except Exception:
            return str(raw)
    return None if value is None else str(value)


def _one_line(value: str | None) -> str:
    return re.sub(r"\s+", " ", value or "").strip()


def _addresses(msg: EmailMessage, name: str) -> tuple[Address, ...]:
    values = []
    try:
        values = [str(v) for v in msg.get_all(name) or []]
    except Exception:
        single = _header(msg, name)
        values = [single] if single else []
    out = []
    for display, email in getaddresses(values):
        email = email.strip().lower()
        if "@" in email:
            out.append(Address(email, _one_line(display)))
    return tuple(out)


def _ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value or ""))


def _date(msg: EmailMessage) -> datetime | None:
    value = _header(msg, "date")
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _strip_private_headers(msg: EmailMessage) -> str | None:
    """Remove X-Mailgate-* so nobody can forge them; return the loop token for classify."""
    loop = None
    names = {k for k in msg if k.lower().startswith("x-mailgate-")}
    for name in names:
        if name.lower() == "x-mailgate-loop":
            loop = _header(msg, name)
        del msg[name]
    return loop


def parse(raw: bytes) -> ParsedMail:
    if not raw.strip():
        raise ParseError("empty message")
    try:
        msg = _PARSER.parsebytes(raw)
        assert isinstance(msg, EmailMessage)
        if not msg.keys():
            raise ParseError("no headers found: not an RFC 5322 message")
        loop_token = _strip_private_headers(msg)
        text, html, attachments, dsn = bodies_and_attachments(msg)
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"unreadable MIME structure: {exc!r}") from exc
    safe_html = sanitize_html(html) if html else None
    if text is None or (not text.strip() and html):
        text = html_to_text(html) if html else ""
    mids = _ids(_header(msg, "message-id"))
    from_list = _addresses(msg, "from")
    auto = tuple((name, _one_line(v)) for name in AUTO_HEADERS if (v := _header(msg, name)) is not None)
    if dsn:
        auto = (*auto, ("x-mailgate-dsn-recipients", ",".join(dsn)))
    return ParsedMail(
        message_id=mids[0] if mids else None,
        sha256=content_hash(raw),
        subject=_one_line(_header(msg, "subject")),
        from_addr=from_list[0] if from_list else None,
        to=_addresses(msg, "to"),
        cc=_addresses(msg, "cc"),
        reply_to=_addresses(msg, "reply-to"),
        in_reply_to=_ids(_header(msg, "in-reply-to")),
        references=_ids(_header(msg, "references")),
        date=_date(msg),
        text=text,
        html=safe_html,
        new_text=split_new_text(text),
        attachments=tuple(attachments),
        auto_headers=auto,
        content_type=msg.get_content_type(),
        defects=tuple(type(d).__name__ for d in msg.defects),
        loop_token=loop_token,
        raw_headers=tuple((k, str(v)) for k, v in msg.raw_items()),
    )
