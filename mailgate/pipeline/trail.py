"""The decision record: what each stage concluded about one mail, and why, kept with the mail.

``ingest`` fills a ``Trail`` as the mail goes through the stages and stores it on the inbound row
with the outcome, in the same savepoint, so ``mailgate explain`` can answer "what happened to this
mail?" weeks later without a dry run, and the record is never out of step with what was done.
It holds conclusions only (a few hundred bytes), never the mail's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailgate.domain import (
    Change,
    Classification,
    Notification,
    ParsedMail,
    RouteDecision,
    Sender,
    ThreadMatch,
)
from mailgate.pipeline.customer_close import CloseRequest
from mailgate.pipeline.mtaverdict import Verdict
from mailgate.pipeline.status_request import StatusAnswer
from mailgate.pipeline.thread import TicketTag


def why_unthreaded(parsed: ParsedMail, tag: TicketTag) -> str:
    """A mail that joined no ticket: what it carried that could have threaded it, and that nothing matched."""
    reasons = ["no signed reply address of ours among its recipients"]
    numbers = tag.numbers_in(parsed.subject)
    reasons.append(f"subject names {', '.join(numbers)}, no such ticket" if numbers else "no ticket tag in the subject")
    if parsed.in_reply_to or parsed.references:
        reasons.append(
            f"In-Reply-To/References ({len(parsed.in_reply_to) + len(parsed.references)} id(s)) "
            "name no message of any ticket"
        )
    else:
        reasons.append("no In-Reply-To or References")
    return "; ".join(reasons)


@dataclass
class Trail:
    data: dict[str, Any] = field(default_factory=dict)

    def dedupe(self, duplicate_of: int | None) -> None:
        self.data["dedupe"] = f"same content as inbound #{duplicate_of}" if duplicate_of else "first copy"

    def classified(self, cls: Classification) -> None:
        self.data["classification"] = {"kind": cls.kind.value, "reason": cls.reason}

    def threaded(self, match: ThreadMatch, why_not: str | None = None) -> None:
        entry: dict[str, Any] = {"via": match.via, "ticket": match.number, "signed": match.signed}
        if match.ticket_id is None and why_not:
            entry["why_not"] = why_not
        if match.merged:  # the ticket named was merged: the mail lands in the survivor (pipeline/links.py)
            entry["named"] = match.merged[0][1]
            entry["merged_via"] = [number for _id, number in match.merged]
        self.data["thread"] = entry

    def sender(self, sender: Sender) -> None:
        self.data["sender"] = {
            "address": sender.address,
            "role": sender.role.value,
            "authenticated": sender.authenticated,
            "reason": sender.reason,
        }

    def forwarded(self, record: dict[str, Any] | None) -> None:
        """An authenticated agent's forward: whose mail it is and what came of it (forward_intake.py)."""
        if record is not None:
            self.data["forwarded"] = record

    def admitted(
        self, *, reject: str | None, follow_up_of: str | None, collaborator: str | None, to_ticket: bool
    ) -> None:
        entry: dict[str, Any] = {"joins_ticket": to_ticket}
        if reject:
            entry["refused"] = reject
        if follow_up_of:
            entry["follow_up_of"] = follow_up_of
        if collaborator:
            entry["adds_collaborator"] = collaborator
        self.data["admission"] = entry

    def closing(self, request: CloseRequest | None) -> None:
        """A close word in a customer's reply: carried out, or ignored and why (customer_close.py)."""
        if request is not None:
            self.data["customer_close"] = {
                "command": request.word,
                "ticket": request.number,
                "acts": request.acts,
                "reason": request.reason,
            }

    def status_request(self, answer: StatusAnswer) -> None:
        self.data["status_request"] = {
            "to": answer.address,
            "answered": answer.answered,
            "reason": answer.reason,
            "tickets": list(answer.listed),
        }

    def routed(self, decision: RouteDecision) -> None:
        self.data["rules"] = {"matched": list(decision.matched)}
        if decision.trace:
            self.data["rules"]["trace"] = [
                {"rule": t.name, "matched": t.matched, "reason": t.reason} for t in decision.trace
            ]
        self.data["rules"]["changes"] = list(decision.changes)
        self.data["route"] = {
            "action": decision.action,
            "help_topic": decision.help_topic,
            "help_topic_via": decision.help_topic_via,
            "department": decision.department,
            "priority": decision.priority.value,
            "sla_plan": decision.sla_plan,
            "assignee": decision.assignee,
            "no_autoreply": decision.no_autoreply,
        }

    def spam(self, verdict: Verdict) -> None:
        if verdict.read:  # intake.spam configured: what the relays said, believed or not, and why
            self.data["spam"] = verdict.as_record()

    def flood(self, record: dict[str, Any] | None) -> None:
        if record is not None:
            self.data["flood"] = record

    def acted(self, change: Change) -> None:
        self.data["actions"] = {
            "ticket": change.number,
            "created": change.created,
            "reopened": change.reopened,
            "message": change.message_kind.value,
            "status": change.status_changed,
            "assigned_to": change.assigned_to,
            "transferred_to": change.transferred_to,
            "command_errors": list(change.command_errors),
            "events": list(change.events),
        }
        if change.link is not None:  # an agent's #merge or #split: done, or refused and why
            link = change.link
            self.data[link.command] = {"ticket": link.ticket, "other": link.other, "done": link.refused is None,
                                       "detail": link.refused or link.detail}

    def notified(self, notes: list[Notification]) -> None:
        self.data["notifications"] = [{"kind": n.kind, "to": list(n.to), "key": n.dedupe_key} for n in notes]

    def speaks_as(self, mail_from: str) -> None:
        """Who the ticket's mail comes from: the address its customer wrote to (notice.ticket_sender)."""
        self.data["speaks_as"] = mail_from

    def outcome(self, status: str, reason: str | None) -> dict[str, Any]:
        self.data["outcome"] = {"status": status, "reason": reason}
        return self.data
