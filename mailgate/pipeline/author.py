"""Whose mail is this, and whose ticket would it open? (pure)

The author is the From address. A mail without one is still somebody's: the
Sender header, then Reply-To, then the envelope sender name who sent it. With
none of them nobody can be answered or recognised later, so ``ingest`` keeps
the mail in quarantine rather than open a ticket that belongs to nobody.

Reply-To is the sender's own word and anyone may put a third party's address
there; acknowledging it would let a stranger make the help desk mail whatever
subject they like to whomever they like. So by default (``security.reply_to:
collaborator``) the requester is the author and Reply-To addresses only become
collaborators, who hear agents' replies but no automatic mail about a new
ticket. Web forms that send ``From: noreply@...`` with the customer in Reply-To
set ``requester``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.domain import Address, Envelope, ParsedMail


@dataclass(frozen=True, slots=True)
class Author:
    address: Address | None  # who wrote the mail; None: nobody we could ever answer
    via: str  # which field named them: From, Sender, Reply-To or the envelope sender
    requester: Address | None  # the requester, should the mail open a ticket
    also_cc: tuple[Address, ...]  # collaborators of a new ticket besides To and Cc


def _envelope_sender(envelope: Envelope) -> Address | None:
    address = envelope.mail_from.strip().strip("<>").strip().lower()
    return Address(address) if "@" in address and " " not in address else None


def author(parsed: ParsedMail, envelope: Envelope, reply_to: str) -> Author:
    found: tuple[Address | None, str] = (None, "nothing")
    for candidate, via in (
        (parsed.from_addr, "From"),
        (parsed.sender, "Sender"),
        (parsed.reply_to[0] if parsed.reply_to else None, "Reply-To"),
        (_envelope_sender(envelope), "envelope sender"),
    ):
        if candidate is not None:
            found = (candidate, via)
            break
    who, via = found
    requester: Address | None
    if reply_to == "requester" and parsed.reply_to:
        requester = parsed.reply_to[0]
        others = parsed.reply_to[1:]
    else:
        requester = who
        others = parsed.reply_to if reply_to == "collaborator" else ()
    also = tuple(a for a in others if requester is None or a.email != requester.email)
    return Author(who, via, requester, also)
