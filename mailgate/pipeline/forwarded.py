"""The mail someone forwarded inside their own: who wrote it, when, about what, and what it said. (pure)

Two ways a forward arrives. The original attached whole (``message/rfc822``: Outlook's "forward as
attachment", Apple Mail and Thunderbird's "forward as attachment") is read as the mail it is, its
Message-ID included. More often clients copy it inline, under a marker and a header block they
write in the forwarder's language:

    ---------- Forwarded message ---------        Gmail (also "Weitergeleitete Nachricht", ...)
    -------- Forwarded Message --------           Thunderbird ("Message transféré", "Mensaje reenviado")
    Begin forwarded message:                      Apple Mail ("Anfang der weitergeleiteten Nachricht:")
    -----Original Message-----                    Outlook ("Ursprüngliche Nachricht", "Message d'origine")
    ________________________________              new Outlook: a rule, then From:/Sent:/To:/Subject:

followed by ``From:``/``Von:``/``De :``/``Van:``, a date, a subject and recipients, then the body.
mail-parser-reply (used for signatures) finds Outlook-style header blocks to cut a reply at, but it
reads neither the forward markers nor the fields' values, so this module does.

Outlook writes the same ``-----Original Message-----`` block under a reply as under a forward, so
those two markers count only when the subject says forward (``FW:``, ``WG:``, ``TR:``, ``RV:``, ...).

A forward of a forward nests: each block's body may hold another. All are returned, outermost
first; which one is the customer is the caller's decision (``forward_intake.py``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from mailgate.addresslist import addresses
from mailgate.charsets import decode_words
from mailgate.domain import Address, Attachment, ParsedMail
from mailgate.errors import ParseError
from mailgate.pipeline.parse import parse
from mailgate.pipeline.quotes import split_new_text
from mailgate.pipeline.signature import strip_signature
from mailgate.pipeline.written_date import read_date

# Fwd: FW: WG: (German) TR: (French) RV: (Spanish) Doorst: (Dutch) ENC: (Portuguese), repeated or numbered
_PREFIX = re.compile(r"^\s*(?:(?:fwd?|fw|wg|tr|rv|doorst|enc)\s*(?:\[\d+\])?\s*:\s*)+", re.I)
_LINE_QUOTE = re.compile(r"^(?:>[ \t]?)+")
_SPACE = "[ \t\u00a0\u202f]"
_FORWARD = re.compile(
    rf"^{_SPACE}*-*{_SPACE}*(forwarded message|weitergeleitete nachricht|message transf[ée]r[ée]|"
    rf"mensaje reenviado|doorgestuurd bericht|forwarded message from .{{1,300}}?){_SPACE}*-*{_SPACE}*$",
    re.I,
)
_BEGIN = re.compile(
    rf"^{_SPACE}*(begin forwarded message|anfang der weitergeleiteten nachricht|d[ée]but du message r[ée]exp[ée]di[ée]|"
    rf"inicio del mensaje reenviado|begin doorgestuurd bericht){_SPACE}*:{_SPACE}*$",
    re.I,
)
# only with a forward's subject: the same block sits under an Outlook reply
_ORIGINAL = re.compile(
    rf"^{_SPACE}*-{{2,}}{_SPACE}*(original message|urspr[üu]ngliche nachricht|message d'origine|mensaje original|"
    rf"oorspronkelijk bericht){_SPACE}*-{{2,}}{_SPACE}*$",
    re.I,
)
_RULE = re.compile(rf"^{_SPACE}*_{{20,}}{_SPACE}*$")
_END = re.compile(r"^\s*-*\s*(end( of)? forwarded message|ende der weitergeleiteten nachricht)\s*-*\s*$", re.I)

_FIELDS = {
    "from": "from von de van da fra från",
    "date": "date sent datum gesendet envoyé envoye enviado fecha verzonden verstuurd data inviato sendt skickat",
    "subject": "subject betreff objet sujet asunto onderwerp oggetto assunto emne ämne",
    "to": "to an à a pour para aan per til till",
    "cc": "cc kopie copie",
}
_FIELD_OF = {word: field for field, words in _FIELDS.items() for word in words.split()}
_FIELD_OF.update({"enviado el": "date", "message-id": "message-id", "reply-to": "reply-to", "antwort an": "reply-to"})
_HEADER = re.compile(
    rf"^{_SPACE}*\*{{0,2}}([^\W\d_][\w -]{{0,14}}?){_SPACE}*\*{{0,2}}{_SPACE}*[:：]\*{{0,2}}{_SPACE}*(.*)$"
)
_MAILTO = re.compile(r"\[mailto:([^\]\s]+)\]|<mailto:([^>\s]+)>", re.I)
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
MAX_DEPTH = 10  # forwards of forwards: deeper than this is not a mail anyone wrote


@dataclass(frozen=True, slots=True)
class Original:
    """One forwarded mail as far as it could be read; ``sender`` None: no From with an address."""

    sender: Address | None
    date: datetime | None
    date_text: str  # as written, to say what was not understood
    subject: str
    text: str
    how: str  # "attached (message/rfc822)" or "inline (<marker>)"
    message_id: str | None = None  # known only for an attached mail
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    inner: Original | None = None  # the mail this one forwards in turn


@dataclass(frozen=True, slots=True)
class Found:
    comment: str  # the forwarder's own words above the forwarded mail
    original: Original  # the outermost forwarded mail

    def chain(self) -> list[Original]:
        out: list[Original] = []
        at: Original | None = self.original
        while at is not None and len(out) < MAX_DEPTH:
            out.append(at)
            at = at.inner
        return out


def strip_prefixes(subject: str) -> str:
    """``Fwd: WG: Printer`` -> ``Printer``; ``Fwd: Re: Printer`` -> ``Re: Printer`` (it was a reply)."""
    return _PREFIX.sub("", subject).strip()


def is_forward_subject(subject: str) -> bool:
    return bool(_PREFIX.match(subject))


def dedupe_key(original: Original) -> str | None:
    """Sender, date to the minute (in UTC) and subject: the same customer mail forwarded by two agents,
    from two clients, in two languages, gives the same key. None without a sender or a date."""
    if original.sender is None or original.date is None:
        return None
    minute = original.date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    subject = " ".join(strip_prefixes(original.subject).casefold().split())
    return hashlib.sha256(f"{original.sender.email}\n{minute}\n{subject}".encode()).hexdigest()[:40]


def _address(value: str) -> Address | None:
    """The one address of a From line: ``Pat <pat@x>``, ``Pat [mailto:pat@x]``, ``pat@x``; None when
    there is none or more than one (a name alone, as Exchange writes colleagues, names nobody)."""
    value = _MAILTO.sub(lambda m: f"<{m.group(1) or m.group(2)}>", decode_words(value))
    found = {a.lower() for a in _ADDRESS.findall(value)}
    if len(found) != 1:
        return None
    listed = [(name, email.strip().lower()) for name, email in addresses([value]) if email.strip()]
    email = found.pop()
    name = next((n for n, e in listed if e == email), "")
    if not name:
        name = value.split("<", 1)[0] if "<" in value else ""
    name = " ".join(name.strip().strip("\"'").split())
    return Address(email, "" if name.lower() == email else name[:200])


def _marker(line: str, forward_subject: bool) -> str | None:
    if _FORWARD.match(line) or _BEGIN.match(line):
        return line.strip(" \t-:\u00a0")
    if forward_subject and (_ORIGINAL.match(line) or _RULE.match(line)):
        return line.strip(" \t-\u00a0")[:40] or "rule"
    return None


def _field(line: str) -> tuple[str, str, str] | None:
    """(field, value, the name as written) of a header line in any of the languages."""
    m = _HEADER.match(line)
    if m is None:
        return None
    name = " ".join(m.group(1).lower().split())
    field = _FIELD_OF.get(name)
    return (field, m.group(2).strip().strip("*").strip(), name) if field else None


def _header_block(lines: list[str], start: int) -> tuple[dict[str, str], bool, int]:
    """The fields from ``start`` (blank lines before them skipped), whether From was written in
    English (so 05/06/2026 is May 6), and where the body begins."""
    at = start
    while at < len(lines) and at - start < 3 and not lines[at].strip():
        at += 1
    fields: dict[str, str] = {}
    english = False
    last: str | None = None
    while at < len(lines):
        line = lines[at]
        if not line.strip():
            break
        found = _field(line)
        if found is not None:
            last = found[0]
            fields.setdefault(last, found[1])
            english = english or found[2] == "from"
        elif last is not None and (line[:1] in (" ", "\t") or _wrapped_address(last, line)):
            fields[last] = f"{fields[last]} {line.strip()}"  # a long To: wrapped onto the next line
        else:
            break
        at += 1
    return fields, english, at


def _wrapped_address(field: str, line: str) -> bool:
    """Thunderbird wraps a long To: with no indent: ``Jiří Houdek\n<jiri@example.cz>``."""
    return field in ("to", "cc") and ":" not in line and bool(_ADDRESS.search(line))


def _unquoted(lines: list[str], prefix: str) -> list[str]:
    """The forwarded block without the quote marks the marker line had, or (Apple Mail) without the
    one level of ``>`` it quotes the whole forwarded mail with."""
    if not prefix:
        first = next((ln for ln in lines if ln.strip()), "")
        if not first.startswith(">"):
            return lines
        return [re.sub(r"^> ?", "", ln) for ln in lines]
    return [ln[len(prefix):] if ln.startswith(prefix) else _LINE_QUOTE.sub("", ln) for ln in lines]


def _inline(lines: list[str], forward_subject: bool, zone: datetime | None, depth: int) -> tuple[str, Original] | None:
    for i, line in enumerate(lines):
        prefix_match = _LINE_QUOTE.match(line)
        prefix = prefix_match.group(0) if prefix_match else ""
        marker = _marker(line[len(prefix):], forward_subject or depth > 0)
        if marker is None:
            continue
        rest = _unquoted(lines[i + 1 :], prefix)
        fields, english, body_at = _header_block(rest, 0)
        if not fields:
            continue  # a marker with no header block under it is somebody's words
        body_lines = rest[body_at:]
        end = next((j for j, ln in enumerate(body_lines) if _END.match(ln)), len(body_lines))
        body = "\n".join(body_lines[:end]).strip()
        inner = _inline(body.splitlines(), True, zone, depth + 1) if depth + 1 < MAX_DEPTH else None
        written = fields.get("date", "")
        original = Original(
            sender=_address(fields["from"]) if "from" in fields else None,
            date=read_date(written, zone.tzinfo if zone else None, month_first=english),
            date_text=written,
            subject=strip_prefixes(decode_words(fields.get("subject", ""))),
            text=body,
            how=f"inline ({marker})",
            inner=inner[1] if inner else None,  # no Message-ID: a line of text proves no mail's identity
        )
        return "\n".join(lines[:i]).strip(), original
    return None


def _attached(parsed: ParsedMail, depth: int = 0) -> Original | None:
    """The one attached mail, read whole (None: none, or several: which one would be the customer's?)."""
    mails = [a for a in parsed.attachments if a.content_type == "message/rfc822" and a.data]
    if len(mails) != 1:
        return None
    try:
        inner = parse(mails[0].data)  # within the limits the whole mail was checked against
    except ParseError:
        return Original(None, None, "", "", "", "attached (message/rfc822, unreadable)")
    nested = _attached(inner, depth + 1) if depth + 1 < MAX_DEPTH else None
    if nested is None and depth + 1 < MAX_DEPTH:
        found = _inline(inner.text.splitlines(), is_forward_subject(inner.subject), inner.date, depth + 1)
        nested = found[1] if found else None
    return Original(
        sender=inner.from_addr or inner.sender,
        date=inner.date,
        date_text="",
        subject=strip_prefixes(inner.subject),
        text=inner.text,
        how="attached (message/rfc822)",
        message_id=inner.message_id,
        html=inner.html,
        attachments=inner.attachments,
        inner=nested,
    )


def find(parsed: ParsedMail) -> Found | None:
    """The forwarded mail in ``parsed``, or None when it forwards nothing.

    An attached mail comes first: it is the original itself. The forwarder's comment is then the
    text of the mail; inline, it is the text above the marker.
    """
    attached = _attached(parsed)
    if attached is not None:
        return Found(parsed.text.strip(), attached)
    found = _inline(parsed.text.splitlines(), is_forward_subject(parsed.subject), parsed.date, 0)
    if found is None:
        return None
    comment, original = found
    return Found(comment, original)


def words_of(original: Original) -> tuple[str, str]:
    """(new text, text without signature) of an inline original, as parse makes them for a mail."""
    new_text = strip_signature(split_new_text(original.text))
    return new_text, new_text if split_new_text(original.text) == original.text.strip() else ""
