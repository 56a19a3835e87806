"""Stage 8: for a new ticket, which help topic, and so which department, priority and SLA plan? (pure)

The topic is found in a fixed order an admin can predict: receiving address,
plus-address, the IMAP mailbox's default, a subject pattern, a
``Help Topic:`` line in the body, then the configured default.
"""

from __future__ import annotations

import re
from dataclasses import replace

from mailgate.domain import Envelope, ParsedMail, Priority, RouteDecision
from mailgate.rules.engine import CompiledRules, Facts, decode_headers
from mailgate.rules.schema import HelpTopic, RulesFile

_BODY_TOPIC = re.compile(r"^\s*help[ -]?topic\s*:\s*(.+?)\s*$", re.I | re.M)


def _recipients(parsed: ParsedMail, envelope: Envelope) -> list[str]:
    seen = [r.lower() for r in envelope.rcpt_tos]
    seen += [a.email for a in (*parsed.to, *parsed.cc)]
    return list(dict.fromkeys(seen))


def find_topic(
    parsed: ParsedMail, envelope: Envelope, rules: RulesFile, mailbox_topic: str | None
) -> tuple[HelpTopic | None, str]:
    topics = {t.name: t for t in rules.help_topics}
    recipients = _recipients(parsed, envelope)
    for topic in rules.help_topics:
        if any(r in topic.recognise.addresses for r in recipients):
            return topic, "address"
    for topic in rules.help_topics:
        plus = topic.recognise.plus
        if plus and any(r.split("@")[0].partition("+")[2] == plus.lower() for r in recipients):
            return topic, "plus_address"
    if mailbox_topic and mailbox_topic in topics:
        return topics[mailbox_topic], "mailbox"
    for topic in rules.help_topics:
        if topic.recognise.subject and re.search(topic.recognise.subject, parsed.subject):
            return topic, "subject"
    m = _BODY_TOPIC.search(parsed.new_text)
    if m and m.group(1) in topics:
        return topics[m.group(1)], "body"
    if rules.default_help_topic is not None and rules.default_help_topic in topics:
        return topics[rules.default_help_topic], "default"
    return None, "none"


def _facts(parsed: ParsedMail, envelope: Envelope, topic: str | None, rules: CompiledRules) -> Facts:
    return Facts(
        sender=parsed.from_addr.email if parsed.from_addr else envelope.mail_from.lower(),
        recipients=tuple(_recipients(parsed, envelope)),
        subject=parsed.subject,
        body=parsed.new_text,
        body_full=parsed.text,
        help_topic=topic,
        headers=decode_headers(parsed.raw_headers) if rules.needs_headers else {},
    )


_THEN_TO_DECISION = {
    "department": "department",
    "priority": "priority",
    "sla": "sla_plan",
    "assignee": "assignee",
    "reject": "reject",
}


def _from_topic(topic: HelpTopic | None, via: str) -> RouteDecision:
    if topic is None:
        return RouteDecision(None, None, Priority.NORMAL, None, None, help_topic_via=via)
    return RouteDecision(
        topic.name,
        topic.department,
        topic.priority,
        topic.sla,
        None,
        no_autoreply=not topic.auto_ack,
        help_topic_via=via,
    )


def route(
    parsed: ParsedMail, envelope: Envelope, rules: RulesFile, mailbox_topic: str | None, compiled: CompiledRules
) -> RouteDecision:
    topic, via = find_topic(parsed, envelope, rules, mailbox_topic)
    matched, trace = compiled.evaluate(_facts(parsed, envelope, topic.name if topic else None, compiled))
    decision = _from_topic(topic, via)
    topics = {t.name: t for t in rules.help_topics}
    changes: list[str] = []
    for name, then in matched:
        if then.help_topic and then.help_topic in topics:  # a topic brings its defaults; later actions override
            decision = replace(
                _from_topic(topics[then.help_topic], f"rule {name}"),
                assignee=decision.assignee,
                reject=decision.reject,
                no_autoreply=decision.no_autoreply,
            )
            changes.append(f"rule {name} set help_topic={then.help_topic}")
        for key, attr in _THEN_TO_DECISION.items():
            value = getattr(then, key)
            if value is not None:
                decision = replace(decision, **{attr: value})
                changes.append(f"rule {name} set {key}={value}")
        if then.no_autoreply and not decision.no_autoreply:
            decision = replace(decision, no_autoreply=True)
            changes.append(f"rule {name} suppressed the acknowledgment")
    return replace(decision, trace=trace, changes=tuple(changes))
