"""Who hears about a change: one decision per notification kind, from the ticket and the directory. (pure)

Kept apart from rendering and delivery so the rules ("agents are alerted,
customers are acknowledged, notes never reach a customer") read as a list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailgate.config import AgentsFile
from mailgate.domain import Address, Change, Classification, MessageKind, Sender


@dataclass(frozen=True, slots=True)
class TicketView:
    requester: Address
    collaborators: tuple[Address, ...]
    assignee: str | None
    department: str | None


@dataclass(frozen=True, slots=True)
class Planned:
    kind: str
    to: Address
    automatic: bool  # machine-initiated: loop guard and rate limits apply
    auto_submitted: str | None  # RFC 3834 value, None for a human's words relayed
    template: str = ""  # the templates to render, when not the kind's own (a help topic's ack_template)


class Directory:
    """Agents and departments from agents.yaml, for looking up who works a ticket."""

    def __init__(self, agents: AgentsFile) -> None:
        self.names: dict[str, str] = {a.email: a.name for a in agents.agents}
        self.departments = {d.name: d for d in agents.departments}

    def is_agent(self, address: str) -> bool:
        return address.lower() in self.names

    def agent(self, address: str) -> Address:
        return Address(address, self.names.get(address, ""))

    def responsible(self, ticket: TicketView) -> list[Address]:
        """The assignee; else the department's members; else its manager."""
        if ticket.assignee:
            return [self.agent(ticket.assignee)]
        return self.department_people(ticket.department)

    def department_people(self, name: str | None) -> list[Address]:
        """A department's members; else its manager."""
        dept = self.departments.get(name or "")
        if dept is None:
            return []
        people = dept.members or ([dept.manager] if dept.manager else [])
        return [self.agent(a) for a in dict.fromkeys(people)]

    def department_overrides(self, name: str | None) -> dict[str, bool] | None:
        dept = self.departments.get(name or "")
        return dept.notifications if dept else None


def _without(people: Sequence[Address], *exclude: str) -> list[Address]:
    skip = {e.lower() for e in exclude if e}
    return [p for p in people if p.email not in skip]


def for_inbound(
    change: Change,
    ticket: TicketView,
    cls: Classification,
    sender: Sender,
    directory: Directory,
    *,
    acknowledge: bool,
    ack_template: str = "ack_new",
) -> list[Planned]:
    """Notifications caused by a received mail: a new ticket, a customer message, or an agent's action."""
    if change.link is not None and change.link.refused is None:
        return _for_link(change, ticket, sender, directory)
    agents = _without(directory.responsible(ticket), sender.address)
    if change.created:  # the acknowledgment goes to the requester alone (never to a Reply-To: see author.py)
        planned = []
        if acknowledge and not cls.automatic and ticket.requester.email:
            planned.append(Planned("ack_new", ticket.requester, True, "auto-replied", ack_template))
        return planned + [Planned("alert_new", agent, True, "auto-generated") for agent in agents]
    if change.command_errors:
        return [Planned("command_error", directory.agent(sender.address), True, "auto-replied")]
    if change.message_kind is MessageKind.CUSTOMER and change.status_changed in ("resolved", "closed"):
        # the requester closed it by mail (customer_close.py): they get a confirmation, the agents the news
        confirm = [Planned("notice_closed", ticket.requester, True, "auto-replied")] if ticket.requester.email else []
        return confirm + [Planned("alert_closed", agent, True, "auto-generated") for agent in agents]
    if change.message_kind is MessageKind.CUSTOMER:
        return [Planned("alert_message", agent, True, "auto-generated") for agent in agents]
    if change.message_kind in (MessageKind.AGENT, MessageKind.NOTE):
        return _for_agent_action(change, ticket, sender, directory, agents)
    return []


def _for_agent_action(
    change: Change, ticket: TicketView, sender: Sender, directory: Directory, agents: list[Address]
) -> list[Planned]:
    planned: list[Planned] = []
    customers = _without([ticket.requester, *ticket.collaborators], sender.address)
    if change.message_kind is MessageKind.AGENT:  # a human's words: relayed, not an automatic mail
        planned += [Planned("agent_reply", person, False, None) for person in customers if person.email]
    elif change.text:
        planned += [Planned("alert_note", agent, True, "auto-generated") for agent in agents]
    if change.status_changed in ("resolved", "closed") and ticket.requester.email:
        planned.append(Planned("notice_status", ticket.requester, True, "auto-generated"))
    if change.assigned_to and change.assigned_to != sender.address:
        planned.append(Planned("alert_assigned", directory.agent(change.assigned_to), True, "auto-generated"))
    if change.transferred_to:  # the new department hears of it, even when someone took the ticket meanwhile
        department = directory.department_people(change.transferred_to)
        told = _without(department, sender.address, change.assigned_to or "")
        planned += [Planned("alert_assigned", agent, True, "auto-generated") for agent in told]
    return planned


def _for_link(change: Change, ticket: TicketView, sender: Sender, directory: Directory) -> list[Planned]:
    """A merge tells the survivor's customers once (its requester and everyone who joined); a split tells
    the new ticket's requester its number, and alerts its agents as a new ticket does (the one who split
    it too: the alert's signed Reply-To is how they answer the new ticket by mail)."""
    assert change.link is not None
    if change.link.command == "merge":
        customers = _without([ticket.requester, *ticket.collaborators], sender.address)
        return [Planned("notice_merged", person, True, "auto-generated")
                for person in customers if person.email and not directory.is_agent(person.email)]
    told = [Planned("notice_split", ticket.requester, True, "auto-generated")] if ticket.requester.email else []
    return told + [Planned("alert_new", agent, True, "auto-generated") for agent in directory.responsible(ticket)]
