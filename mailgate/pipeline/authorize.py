"""Stage 6: who is writing — requester, collaborator, agent or stranger?

The role decides what a mail may do to a ticket. Roles come from the ticket's
participants and the agent directory, never from anything the mail claims
about itself beyond its From address.
"""

from __future__ import annotations

from mailgate.domain import ParsedMail, Role, Sender, ThreadMatch
from mailgate.store import Store


def authorize(parsed: ParsedMail, match: ThreadMatch, store: Store, agents: dict[str, int]) -> Sender:
    address = parsed.from_addr.email if parsed.from_addr else ""
    name = parsed.from_addr.name if parsed.from_addr else ""
    if address in agents:
        return Sender(address, Role.AGENT, agents[address], name)
    if match.ticket_id is None:
        return Sender(address, Role.REQUESTER, None, name)
    for email, _name, role in store.participants(match.ticket_id):
        if email == address:
            return Sender(address, Role(role), None, name)
    return Sender(address, Role.STRANGER, None, name)
