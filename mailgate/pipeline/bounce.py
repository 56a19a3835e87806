"""Bounces act only on proof: which of our mails came back, and to whom it failed.

A delivery report is easy to forge: anyone can send ``X-Failed-Recipients:`` or a
``multipart/report`` naming any address, with any ticket's tag in the subject.
Acting on such a report would let a sender silence a victim (no acknowledgment
for two months) or an agent (no alerts). So a report counts only when it proves
it answers a mail we sent:

- it was delivered to our VERP bounce address ``support+b<row>-<sig>@...``, which
  names one outbox row and is signed, so it was sent back by the relay that had
  that mail; or
- it quotes our signed Message-ID of a mail to the failed recipient (the id holds
  a keyed hash of its recipient, so it vouches for that address alone).

Only addresses that the report names as failed *and* that were recipients of the
proven mail are suppressed, and never an agent's. A report without proof is
kept in quarantine with the reason, never acted on and never a ticket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailgate.domain import Classification, ParsedMail, RawMail
from mailgate.identity import Identity
from mailgate.storage.model import Event
from mailgate.storage.store import Store


@dataclass(frozen=True, slots=True)
class BounceProof:
    ticket_id: int | None  # None: a mail of ours without a ticket (a rejection notice)
    via: str
    failed: frozenset[str]  # addresses named as failed that the proven mail was really sent to


def prove(
    raw: RawMail, parsed: ParsedMail, cls: Classification, store: Store, identity: Identity, rcpt_tos: tuple[str, ...]
) -> BounceProof | None:
    for address in (*rcpt_tos, *(a.email for a in parsed.to)):  # an MTA writes the bounce address in To
        row_id = identity.read_token(address, "b")
        found = store.outbox_target(row_id) if row_id is not None else None
        if found is not None:
            ticket_id, recipients = found
            failed = frozenset(cls.bounced & {r.lower() for r in recipients})
            return BounceProof(ticket_id, f"sent to the bounce address of outbox #{row_id}", failed)
    by_ticket: dict[int, set[str]] = {}
    for signed in identity.signed_ids_in(raw.decode("latin-1")):
        by_ticket.setdefault(signed.ticket_id, set()).add(signed.recipient_hash)
    for ticket_id, hashes in by_ticket.items():
        if store.ticket(ticket_id) is not None:
            failed = frozenset(a for a in cls.bounced if identity.recipient_hash(a) in hashes)
            return BounceProof(ticket_id, "quotes our signed Message-ID", failed)
    return None


def suppress_failed(
    store: Store, proof: BounceProof, agents: dict[str, str], cls: Classification, until: datetime, now: datetime
) -> list[str]:
    """Suppress the proven failed recipients (agents excepted); record on the ticket what was and was not."""
    suppressed = sorted(a for a in proof.failed if a not in agents)
    for address in suppressed:
        where = f"on ticket id {proof.ticket_id}" if proof.ticket_id else "of a mail without ticket"
        store.suppress(address, until, f"bounced ({cls.reason}) {where}", now)
    if proof.ticket_id is None:
        return suppressed
    ignored = sorted(cls.bounced - set(suppressed))
    lines = [f"{a} bounced; no automatic mail to it until {until.date()}" for a in suppressed]
    if ignored:
        lines.append(f"also named as failed, not suppressed (not proven a recipient of ours, or an agent): "
                     f"{', '.join(ignored)}")
    rows = [
        {"ticket_id": proof.ticket_id, "at": now, "kind": "undeliverable", "actor": "system", "detail": line}
        for line in lines
    ]
    store.add_rows(Event, rows)
    return suppressed
