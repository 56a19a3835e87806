"""The relay's spam verdict for one mail (``intake.spam``), and what the policy does with it.

Whose word a header is: ``mtaverdict.py``. Here: which hop handed the mail to us, and the policy.
``quarantine`` (the default) keeps spam stored but held, never acknowledged and alerting nobody,
until ``mailgate quarantine reprocess ID`` releases it; ``topic:<name>`` opens its ticket in that
help topic without an acknowledgment; ``accept`` only gives the rules ``spam``, ``spam_score``
and ``dmarc`` to decide with.

A reply on an existing ticket that the relay marks as spam is held too. What a spam filter gets
wrong about a customer's reply costs a delay (agents see it in ``quarantine list --spam`` and
release it onto the ticket); what it gets right (a customer's hijacked account mailing everyone it
ever wrote to, our signed reply address included) would otherwise reach the agents' inboxes as an
alert. An authenticated agent's mail is never held: it proves who wrote it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from mailgate.config.intake_policy import Spam
from mailgate.domain import Envelope, ParsedMail, RouteDecision
from mailgate.pipeline.mtaverdict import Verdict, read_verdict
from mailgate.rules.schema import HelpTopic

OFF = Verdict(why="no intake.spam.trusted_relays or authserv_ids configured: no header is read", read=False)


def hop(env: Envelope, source: str, settings: Spam) -> tuple[bool, str]:
    """Whether the hop that handed the mail to us is trusted, and why. ``source``: the mail's own
    (a replayed mail's envelope says ``reprocess``; its first arrival decides)."""
    if source in ("smtp", "lmtp"):
        try:
            ip = ipaddress.ip_address(env.peer)
        except ValueError:
            return False, f"delivered over {source.upper()} by {env.peer or 'an unknown peer'}, not a trusted relay"
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        peer = mapped or ip
        # loopback inside the header is a relay's hand-off to its own filter, but as our peer it must be
        # listed: anyone with a shell on this machine can connect from there
        if any(peer.version == net.version and peer in net for net in settings.trusted_relays):
            return True, f"delivered over {source.upper()} by {env.peer}, a trusted relay"
        return False, f"delivered over {source.upper()} by {env.peer}, not in intake.spam.trusted_relays"
    if source == "imap":
        return True, f"delivered into the IMAP mailbox {env.mailbox or ''} by its server".replace("  ", " ")
    return True, "handed over by the local MTA (pipe)"


def verdict(parsed: ParsedMail, env: Envelope, source: str, settings: Spam, *, released: bool = False) -> Verdict:
    if not settings.trusted_relays and not settings.authserv_ids:
        return OFF
    trusted, why = hop(env, source, settings)
    domain = parsed.from_addr.email.rpartition("@")[2] if parsed.from_addr else None
    found = read_verdict(
        parsed.raw_headers,
        hop_trusted=trusted,
        hop=why,
        relays=settings.trusted_relays,
        authserv_ids=settings.authserv_ids,
        from_domain=domain,
    )
    if released and found.spam:  # the admin looked at it and said it is not: processed as not spam, once
        return replace(found, spam=False, released=True, why=f"{found.why}; released from quarantine by the admin")
    return found


def hold_reason(found: Verdict, settings: Spam, agent: bool) -> str | None:
    """``spam: ...`` when the policy holds this mail, else None."""
    if not found.spam or settings.action != "quarantine" or agent:
        return None
    said = "; ".join(found.used) or "a trusted relay's verdict"
    return f"spam: {said}"[:1000]


def to_topic(decision: RouteDecision, topic: HelpTopic) -> RouteDecision:
    """``action: topic:<name>``: a new ticket in that topic (its defaults), never acknowledged."""
    return replace(
        decision,
        help_topic=topic.name,
        help_topic_via="spam verdict",
        department=topic.department,
        priority=topic.priority,
        sla_plan=topic.sla,
        ack_template=topic.ack_template,
        no_autoreply=True,
        changes=(*decision.changes, f"spam verdict: help topic {topic.name}, no acknowledgment"),
    )
