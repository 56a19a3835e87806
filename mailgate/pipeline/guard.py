"""Loop and flood safety: may mailgate send an *automatic* mail to this address now? (pure)

Machine mail never gets an automatic answer; our own addresses never get
one; an address that bounced permanently is left alone for a while; and a
ladder of rate limits (Zammad's: 10 in 10 min, 25 in an hour, 100 in 10 h)
caps what one correspondent can trigger, so two robots talking to each other
exchange a bounded number of mails. Humans' replies relayed by agents are
not automatic and are not limited here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgate.domain import Classification
from mailgate.identity import is_own_address


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    within: timedelta


DEFAULT_LADDER = (
    Limit(10, timedelta(minutes=10)),
    Limit(25, timedelta(hours=1)),
    Limit(100, timedelta(hours=10)),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str = ""


def exceeded(sent_at: Sequence[datetime], ladder: Sequence[Limit], now: datetime) -> Limit | None:
    """The first rung of the ladder that is already full (``sent_at``: earlier automatic mails)."""
    for limit in ladder:
        recent = sum(1 for t in sent_at if now - t < limit.within)
        if recent >= limit.count:
            return limit
    return None


def may_send_automatic(
    recipient: str,
    *,
    trigger: Classification | None,
    own: frozenset[str],
    suppressed_until: datetime | None,
    to_recipient: Sequence[datetime],
    to_recipient_on_ticket: Sequence[datetime],
    ladder: Sequence[Limit],
    ticket_ladder: Sequence[Limit],
    now: datetime,
) -> Verdict:
    if trigger is not None and trigger.automatic:
        return Verdict(False, f"the triggering mail is machine-sent ({trigger.kind.value}: {trigger.reason})")
    if is_own_address(recipient, own):
        return Verdict(False, f"{recipient} is one of our own addresses")
    if suppressed_until is not None and suppressed_until > now:
        return Verdict(False, f"{recipient} bounced; no automatic mail until {suppressed_until.isoformat()}")
    for history, rungs, scope in (
        (to_recipient, ladder, "recipient"),
        (to_recipient_on_ticket, ticket_ladder, "ticket"),
    ):
        full = exceeded(history, rungs, now)
        if full is not None:
            return Verdict(False, f"rate limit for this {scope}: {full.count} automatic mails within {full.within}")
    return Verdict(True)
