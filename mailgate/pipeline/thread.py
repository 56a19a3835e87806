"""Stage 5: which ticket does this mail belong to? Subject tag (ours, then other desks'), In-Reply-To, References.

The tag regex is built from the configured format with ``re.escape``, so an
admin's ``[Support #{number}]`` works and nothing in it is read as a pattern.
It is searched anywhere in the subject: ``Re: AW: [EXT] Fwd: ... [#123456]``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import replace

from mailgate.domain import ParsedMail, ThreadMatch
from mailgate.identity import Identity
from mailgate.storage import links
from mailgate.storage.store import Store

MAX_TAGS = 10  # tags looked up per subject: a subject of 50,000 tags must not cost 50,000 queries


def _tag_regex(tag: str, number_re: str) -> re.Pattern[str]:
    before, _, after = tag.partition("{number}")
    # no digit may touch the number, so "#123456" is never read out of "#1234567"
    return re.compile(
        re.escape(before).replace(r"\ ", r"\s*")
        + f"(?<!\\d)({number_re})(?!\\d)"
        + re.escape(after).replace(r"\ ", r"\s*"),
        re.IGNORECASE,
    )


class TicketTag:
    """Ticket number format and subject tag, both ways: make and find.

    ``foreign``: other help desks' subject tags (name -> e.g. ``[Ticket#{number}]``), whose numbers of
    any width (1-20 digits) name tickets imported with those numbers (``ingest --history --number-from``).
    """

    def __init__(self, number_format: str, subject_tag: str, foreign: Mapping[str, str] | None = None) -> None:
        self.number_format = number_format
        self.subject_tag = subject_tag
        self.foreign = {name: _tag_regex(pattern, r"\d{1,20}") for name, pattern in (foreign or {}).items()}
        number_re = "".join(r"\d" if ch == "#" else re.escape(ch) for ch in number_format)
        self.regex = _tag_regex(subject_tag, number_re)

    def new_number(self) -> str:
        """A random number in the format; the first digit is never 0 so numbers keep their length."""
        out = []
        for i, ch in enumerate(self.number_format):
            if ch == "#":
                out.append(
                    str(secrets.randbelow(9) + 1) if i == self.number_format.index("#") else str(secrets.randbelow(10))
                )
            else:
                out.append(ch)
        return "".join(out)

    def tag(self, number: str) -> str:
        return self.subject_tag.replace("{number}", number)

    def numbers_in(self, subject: str) -> list[str]:
        """Numbers tagged in the subject, spelled as stored ("mg-123456" in a reply is "MG-123456")."""
        fmt = self.number_format
        return [
            "".join(c if f == "#" else f for f, c in zip(fmt, m.group(1), strict=True))
            for m in self.regex.finditer(subject)
        ]

    def foreign_numbers(self, subject: str, system: str | None = None) -> list[tuple[str, str]]:
        """(system, number) of each other help desk's tag in the subject (of one system, if named)."""
        return [
            (name, m.group(1))
            for name, regex in self.foreign.items()
            if system in (None, name)
            for m in regex.finditer(subject)
        ]

    def with_tag(self, subject: str, number: str) -> str:
        tag = self.tag(number)
        return subject if tag in subject else f"{tag} {subject}".strip()


def match_thread(
    parsed: ParsedMail, store: Store, tag: TicketTag, identity: Identity, rcpt_tos: tuple[str, ...] = ()
) -> ThreadMatch:
    """The ticket the mail names (``_named``), or the one that ticket was merged into (``landed``)."""
    return landed(store, _named(parsed, store, tag, identity, rcpt_tos))


def landed(store: Store, match: ThreadMatch) -> ThreadMatch:
    """A merged ticket's mail goes to the ticket that took its thread over, along the whole chain
    (A -> B -> C); how it was found, and whether that was signed, stay as they were for the ticket named."""
    ticket = store.ticket(match.ticket_id) if match.ticket_id is not None else None
    if ticket is None or ticket.merged_into is None:
        return match
    final, passed = links.survivor(store.session, ticket)
    return replace(match, ticket_id=final.id, number=final.number, merged=tuple((t.id, t.number) for t in passed))


def _named(
    parsed: ParsedMail, store: Store, tag: TicketTag, identity: Identity, rcpt_tos: tuple[str, ...] = ()
) -> ThreadMatch:
    """Signed reply address first (it proves the mail answers our mail), then our tag, another desk's tag
    (a ticket imported with that number), In-Reply-To, References.

    ``signed`` says the match rests on our own signature (the reply address, or our Message-ID of a
    mail for that ticket): only such a match lets machine mail from a non-participant onto a ticket.
    """
    for address in (*rcpt_tos, *(a.email for a in (*parsed.to, *parsed.cc))):
        ticket_id = identity.read_token(address, "t")
        ticket = store.ticket(ticket_id) if ticket_id is not None else None
        if ticket is not None:
            return ThreadMatch(ticket.id, "token", ticket.number, signed=True)
    ours = {s.ticket_id for s in map(identity.verify_message_id, (*parsed.in_reply_to, *parsed.references)) if s}
    for number in list(dict.fromkeys(tag.numbers_in(parsed.subject)))[:MAX_TAGS]:
        ticket = store.ticket_by_number(number)
        if ticket is not None:
            return ThreadMatch(ticket.id, "tag", ticket.number, signed=ticket.id in ours)
    for system, number in list(dict.fromkeys(tag.foreign_numbers(parsed.subject)))[:MAX_TAGS]:
        ticket_id = store.ticket_by_alias(system, number)
        if ticket_id is not None and (ticket := store.ticket(ticket_id)) is not None:
            return ThreadMatch(ticket.id, "foreign_tag", ticket.number, signed=ticket.id in ours)
    for via, ids in (("in_reply_to", parsed.in_reply_to), ("references", tuple(reversed(parsed.references)))):
        ticket_id = store.ticket_id_for_message_ids(ids)
        if ticket_id is None:
            here = {s.ticket_id for s in map(identity.verify_message_id, ids) if s is not None}
            ticket_id = next((t for t in sorted(here) if store.ticket(t) is not None), None)
        if ticket_id is not None:
            ticket = store.ticket(ticket_id)
            found = ticket.number if ticket else None
            return ThreadMatch(ticket_id, via, found, signed=ticket_id in ours)  # type: ignore[arg-type]
    return ThreadMatch(None, "none")
