"""Mail that is stored but held: the relay's spam verdict (``spam.py``), then flood control (``flood.py``).

Runs after the rules, so an admin's own rule (reject, discard, quarantine) decides first and
``rules test`` shows the rules' trace for held mail too. A held mail is quarantined with its hold
on the inbound row (``spam``, ``flood:sender``, ``flood:domain``): ``quarantine reprocess`` without
ids leaves it alone, ``quarantine reprocess ID`` releases it, and a released mail is held by
neither again (the admin looked at it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailgate.config import Config
from mailgate.domain import Role, RouteDecision, Sender
from mailgate.outbound.templates import Templates
from mailgate.pipeline import flood, spam
from mailgate.pipeline.authorize import Admission
from mailgate.pipeline.mtaverdict import Verdict
from mailgate.storage.store import Store


@dataclass(frozen=True)
class Judged:
    decision: RouteDecision
    held: str | None = None  # the reason, when held
    hold: str | None = None
    record: dict[str, Any] | None = None  # flood control's part of the decision record


def _new_ticket(admission: Admission, sender: Sender) -> bool:
    """Would open a ticket that is not a participant's own follow-up (closed too long ago)."""
    if admission.match.ticket_id is not None:
        return False
    participant = sender.role in (Role.REQUESTER, Role.COLLABORATOR)
    return not (admission.follow_up_of and participant)


def judge(
    store: Store,
    config: Config,
    templates: Templates,
    domain: str,
    verdict: Verdict,
    admission: Admission,
    sender: Sender,
    decision: RouteDecision,
    now: datetime,
    inbound_id: int,
    *,
    released: bool,
    history: bool,
    by_agent: bool = False,
) -> Judged:
    """``sender``: as authorize saw it, before the stranger policy made a stranger a requester.
    ``by_agent``: an authenticated agent's forward, whose sender is now the customer but whose mail
    is the agent's (held by neither spam nor flood, as no agent's mail is)."""
    if history:  # an imported archive: what happened then is what happened
        return Judged(decision)
    intake = config.main.intake
    agent = by_agent or admission.sender.role is Role.AGENT
    why = spam.hold_reason(verdict, intake.spam, agent)
    if why is not None:
        return Judged(decision, why, "spam")
    topic = intake.spam.topic
    new = _new_ticket(admission, sender)
    if verdict.spam and topic is not None and admission.match.ticket_id is None:
        found = next((t for t in config.rules.help_topics if t.name == topic), None)
        decision = spam.to_topic(decision, found) if found is not None else decision
    if intake.flood is None or not new or agent:
        return Judged(decision)
    address = admission.sender.address.lower()
    if released:  # counted as the ticket it opens, never held again by the flood it was held for
        store.update_inbound(inbound_id, {"sender": address[:320], "sender_domain": address.rpartition("@")[2][:255]})
        return Judged(decision, record={"counted": True, "held": False, "why": "released from quarantine"})
    checked = flood.check(store, intake.flood, address, now, inbound_id)
    if checked.row:  # under the lock flood.check took, so the next count sees this mail
        store.update_inbound(inbound_id, checked.row)
    if checked.held is not None:
        main = config.main
        flood.alert(store, templates, checked, main.admin_email, main.outbound.from_, domain, now)
    return Judged(decision, checked.held, checked.hold, checked.record)


def released(store: Store, replayed: int | None, source: str) -> tuple[bool, str]:
    """(a held mail the admin named to reprocess, the source it first arrived by) of a replayed mail."""
    row = store.inbound(replayed) if replayed is not None else None
    return (row.hold is not None, row.source) if row is not None else (False, source)
