"""The loop-and-flood guard: every reason to stay silent, and the ladder's edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailgate.domain import Classification, Kind
from mailgate.pipeline.guard import DEFAULT_LADDER, Limit, exceeded, may_send_automatic

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
OWN = frozenset({"support@example.com"})


def verdict(recipient: str = "pat@customer.example", **kw: object) -> tuple[bool, str]:
    args: dict[str, object] = dict(trigger=Classification(Kind.NEW, "x"), own=OWN, suppressed_until=None,
                                   to_recipient=[], to_recipient_on_ticket=[], ladder=DEFAULT_LADDER,
                                   ticket_ladder=DEFAULT_LADDER, now=NOW)
    args.update(kw)
    v = may_send_automatic(recipient, **args)  # type: ignore[arg-type]
    return v.allowed, v.reason


def test_a_human_new_mail_gets_an_answer() -> None:
    assert verdict() == (True, "")


def test_machine_mail_gets_none() -> None:
    for kind in (Kind.BOUNCE, Kind.AUTO_REPLY, Kind.LOOP):
        allowed, reason = verdict(trigger=Classification(kind, "because"))
        assert not allowed and kind.value in reason


def test_own_addresses_including_plus_forms_get_none() -> None:
    assert not verdict("support@example.com")[0]
    assert not verdict("Support+outage@Example.com")[0]


def test_bounced_address_is_suppressed_until_expiry() -> None:
    assert not verdict(suppressed_until=NOW + timedelta(days=1))[0]
    assert verdict(suppressed_until=NOW - timedelta(seconds=1))[0]


def test_ladder_rungs() -> None:
    nine = [NOW - timedelta(minutes=1)] * 9
    assert exceeded(nine, DEFAULT_LADDER, NOW) is None
    assert exceeded([*nine, NOW], DEFAULT_LADDER, NOW) == DEFAULT_LADDER[0]
    spread = [NOW - timedelta(minutes=15)] * 25  # outside 10 min, inside the hour
    assert exceeded(spread, DEFAULT_LADDER, NOW) == DEFAULT_LADDER[1]
    old = [NOW - timedelta(hours=11)] * 500  # outside every window
    assert exceeded(old, DEFAULT_LADDER, NOW) is None


def test_rate_limit_per_recipient_and_per_ticket() -> None:
    full = [NOW - timedelta(minutes=1)] * 10
    allowed, reason = verdict(to_recipient=full)
    assert not allowed and "recipient" in reason
    allowed, reason = verdict(to_recipient_on_ticket=full[:3], ticket_ladder=[Limit(3, timedelta(minutes=5))])
    assert not allowed and "ticket" in reason
