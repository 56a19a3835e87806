"""What the HTTP API, the contact form and ``tickets open`` share: a request becomes a mail for ``ingest``.

There is one way of making a ticket (the pipeline). A channel validates what its caller sent,
composes the mail a customer would have written, and hands it on with a ``Submission``
(``pipeline/submission.py``) saying what the channel vouches for. The composed mail is stored like
any other, so ``explain``, ``quarantine`` and the retention job see it as they see mail.

With an ``Idempotency-Key`` the Message-ID is derived from the client and the key, and the mail
has no ``Date`` header, so the same request composes the same bytes: a retry is then a duplicate
by dedupe (same Message-ID, same content), answered with the first ticket's number, and the same
key with another request is refused (``submission.KEY_REUSED``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Literal

from mailgate.config import Config
from mailgate.domain import Envelope, Outcome, Priority, Source
from mailgate.errors import Rejected
from mailgate.identity import is_own_address
from mailgate.pipeline.ingest import Context, ingest
from mailgate.pipeline.submission import HEADER, KEY_REUSED, NO_TICKET, NOT_A_CUSTOMER, NOT_PARTICIPANT, Submission

MAX_SUBJECT = 250  # characters; a longer subject is an error, not cut silently
MAX_FIELDS = 50
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\\\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")


class Invalid(ValueError):
    """Bad input, said for one field; the caller shows it (problem JSON, the form again, exit 65)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Person:
    email: str
    name: str = ""


@dataclass(frozen=True)
class Entry:
    """One request of a channel: a new ticket (``submission.ticket`` None) or a message for one."""

    author: Person  # the requester of a new ticket, or who writes the message
    body: str
    submission: Submission
    subject: str = ""
    attachments: tuple[Upload, ...] = ()
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Filed:
    """What the channel tells its caller, from the pipeline's outcome."""

    status: Literal["created", "added", "duplicate", "held", "refused"]
    number: str | None
    reason: str | None
    message_id: str
    inbound_id: int | None

    @property
    def refusal(self) -> Literal["not_found", "forbidden", "conflict", "invalid"] | None:
        """The kind of refusal, for the channel's answer (404, 403, 422...); None when not refused."""
        if self.status != "refused":
            return None
        reason = self.reason or ""
        if reason.startswith(NO_TICKET):
            return "not_found"
        if NOT_PARTICIPANT in reason:
            return "forbidden"
        if reason == KEY_REUSED:
            return "conflict"
        return "invalid"


def _clean(text: str) -> str:
    """One header line: no control characters (a CR or LF would start a header of the caller's own)."""
    return " ".join("".join(" " if unicodedata.category(c)[0] == "C" else c for c in text).split())


def person(text: str, field: str = "requester") -> Person:
    """``Ken Adams <ken@example.com>`` or ``ken@example.com``, checked; the address lower-cased."""
    cleaned = _clean(text)
    name, address = parseaddr(cleaned)
    address = address.strip()
    if len(getaddresses([cleaned])) != 1 or not _ADDRESS.match(address):
        raise Invalid(field, f"not an email address: {text[:200]!r}")
    if len(address) > 254:
        raise Invalid(field, "the address is longer than 254 characters")
    return Person(address.lower(), _clean(name)[:200])


def fields(given: dict[str, object] | None) -> tuple[tuple[str, str], ...]:
    """Custom fields: short names, text values (numbers and booleans written out), at most ``MAX_FIELDS``."""
    if not given:
        return ()
    if len(given) > MAX_FIELDS:
        raise Invalid("fields", f"at most {MAX_FIELDS} custom fields")
    out = []
    for name, value in given.items():
        if not _FIELD_NAME.match(name):
            raise Invalid("fields", f"field name {name[:80]!r}: letters, digits, '_', '.', '-', at most 64")
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str | int | float) or len(str(value)) > 1000:
            raise Invalid("fields", f"field {name}: a text, number or boolean of at most 1000 characters")
        out.append((name, _clean(str(value))))
    return tuple(out)


def subject(text: str, required: bool) -> str:
    cleaned = _clean(text)
    if required and not cleaned:
        raise Invalid("subject", "required")
    if len(cleaned) > MAX_SUBJECT:
        raise Invalid("subject", f"at most {MAX_SUBJECT} characters")
    return cleaned


def body(text: str) -> str:
    if not text.strip():
        raise Invalid("body", "required")
    if "\x00" in text:
        raise Invalid("body", "contains a NUL character")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def support_address(config: Config, help_topic: str | None) -> str:
    """The intake address the mail is written to: the chosen topic's own, if it has one we receive."""
    ours = [a.lower() for a in config.main.intake.addresses]
    topic = next((t for t in config.rules.help_topics if t.name == help_topic), None)
    if topic is not None:
        own = next((a for a in topic.recognise.addresses if a.lower() in ours), None)
        if own is not None:
            return own.lower()
    return ours[0]


def message_id(entry: Entry, domain: str) -> str:
    sub = entry.submission
    if entry.idempotency_key is not None:
        key = hashlib.sha256(f"{sub.channel}\x1f{sub.client}\x1f{entry.idempotency_key}".encode()).hexdigest()
        return f"<{sub.channel}.{key[:40]}@{domain}>"
    return f"<{sub.channel}.{secrets.token_hex(16)}@{domain}>"


def compose(entry: Entry, to: str, domain: str, now: datetime, tag: str = "") -> tuple[bytes, str]:
    """The mail the request stands for, and its Message-ID. ``tag``: the ticket's subject tag, so a
    message for a ticket reads in any mail client as part of its thread."""
    msg = EmailMessage()
    author = entry.author
    local, _, host = author.email.partition("@")
    msg["From"] = HeaderAddress(display_name=author.name, username=local, domain=host)
    msg["To"] = to
    text = entry.subject or ("Message" if entry.submission.ticket else "")
    msg["Subject"] = f"{tag} {text}".strip() if tag else text
    mid = message_id(entry, domain)
    msg["Message-ID"] = mid
    if entry.idempotency_key is None:
        msg["Date"] = format_datetime(now)
    msg[HEADER] = entry.submission.encode()
    msg.set_content(entry.body, subtype="plain", charset="utf-8", cte="quoted-printable")
    for upload in entry.attachments:
        maintype, _, subtype = (upload.content_type or "application/octet-stream").partition("/")
        msg.add_attachment(upload.data, maintype=maintype or "application", subtype=subtype or "octet-stream",
                           filename=_clean(upload.filename)[:200] or "attachment")
    if entry.idempotency_key is not None and msg.is_multipart():  # a random boundary would make a retry differ
        msg.set_boundary("=_" + hashlib.sha256(mid.encode()).hexdigest()[:40])
    return msg.as_bytes(policy=SMTP), mid


def envelope(entry: Entry, to: str, source: Source, now: datetime, peer: str = "") -> Envelope:
    return Envelope(entry.author.email, (to,), source, now, peer)


def filed(outcome: Outcome, mid: str) -> Filed:
    if outcome.status == "duplicate":
        return Filed("duplicate", outcome.number, outcome.reason, mid, outcome.inbound_id)
    if outcome.status == "rejected":
        return Filed("refused", None, outcome.reason, mid, outcome.inbound_id)
    if outcome.status == "quarantined" or outcome.number is None:
        return Filed("held", None, outcome.reason, mid, outcome.inbound_id)
    status: Literal["created", "added"] = "created" if outcome.thread == "new" else "added"
    return Filed(status, outcome.number, outcome.reason, mid, outcome.inbound_id)


def attachments_total(uploads: Sequence[Upload]) -> int:
    return sum(len(u.data) for u in uploads)


def check(entry: Entry, ctx: Context) -> None:
    """What the configuration must know of (the help topic, the priority, the agent), and a requester who
    is a customer: one of our addresses would be taken for a loop, an agent would be acknowledged as one."""
    sub, config = entry.submission, ctx.config
    if sub.ticket is None and (is_own_address(entry.author.email, ctx.own_addresses)
                               or ctx.directory.is_agent(entry.author.email)):
        raise Invalid("requester", f"{entry.author.email} {NOT_A_CUSTOMER}")
    if sub.help_topic is not None and sub.help_topic not in {t.name for t in config.rules.help_topics}:
        names = ", ".join(t.name for t in config.rules.help_topics)
        raise Invalid("help_topic", f"no help topic {sub.help_topic!r} (there are: {names})")
    if sub.priority is not None and sub.priority not in {p.value for p in Priority}:
        raise Invalid("priority", f"{sub.priority!r} is not one of {', '.join(p.value for p in Priority)}")
    if sub.agent is not None and sub.agent not in {a.email for a in config.agents.agents}:
        raise Invalid("agent", f"{sub.agent} is not an agent in agents.yaml")


def prepared(entry: Entry, ctx: Context, source: Source, now: datetime, peer: str = "") -> tuple[bytes, Envelope, str]:
    """The composed mail, its envelope and Message-ID, after ``check``."""
    sub = entry.submission
    check(entry, ctx)
    to = support_address(ctx.config, sub.help_topic)
    raw, mid = compose(entry, to, ctx.identity.domain, now, ctx.tag.tag(sub.ticket) if sub.ticket else "")
    return raw, envelope(entry, to, source, now, peer), mid


def file_now(ctx: Context, entry: Entry, source: Source) -> Filed:
    """Store it in this process (``tickets open``); TempFail propagates: nothing was stored."""
    raw, env, mid = prepared(entry, ctx, source, ctx.clock.now())
    try:
        outcome = ingest(raw, env, ctx)
    except Rejected as exc:
        return Filed("refused", None, exc.reason, mid, None)
    return filed(outcome, mid)
