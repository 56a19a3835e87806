"""Stage 8: which help topic, and so which department, priority and SLA plan; then the rules' actions (pure).

The topic is found in a fixed order an admin can predict: receiving address,
plus-address, the IMAP mailbox's default, a subject pattern, a
``Help Topic:`` line in the body, then the configured default. Matched rules
then apply in file order; a rule that sets a help topic brings that topic's
defaults, and later actions override earlier ones. Every change is one line
in ``changes``, which ``apply`` records on the ticket.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from mailgate.domain import Envelope, ParsedMail, Priority, RouteDecision
from mailgate.pipeline.mtaverdict import Verdict
from mailgate.rules.engine import CompiledRules, Facts, decode_headers
from mailgate.rules.regex import search
from mailgate.rules.schema import HelpTopic, RulesFile, Then

NO_VERDICT = Verdict(why="no verdict read")
_BODY_TOPIC = re.compile(r"help[ -]?topic[ \t]*:[ \t]*(\S.*)", re.I)  # on one stripped line: no backtracking blow-up


def _recipients(parsed: ParsedMail, envelope: Envelope) -> list[str]:
    seen = [r.lower() for r in envelope.rcpt_tos]
    seen += [a.email.lower() for a in (*parsed.to, *parsed.cc)]
    return list(dict.fromkeys(seen))


def _body_topic(text: str, topics: dict[str, HelpTopic]) -> HelpTopic | None:
    for line in text.splitlines():
        m = _BODY_TOPIC.match(line.strip())
        if m and m.group(1).strip() in topics:
            return topics[m.group(1).strip()]
    return None


def find_topic(
    parsed: ParsedMail, envelope: Envelope, rules: RulesFile, mailbox_topic: str | None, chosen: str | None = None
) -> tuple[HelpTopic | None, str]:
    """``chosen``: the topic an API client or a staff member picked, taken before anything the mail says."""
    topics = {t.name: t for t in rules.help_topics}
    if chosen is not None and chosen in topics:
        return topics[chosen], "chosen"
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
    subject = unicodedata.normalize("NFKC", parsed.subject)
    for topic in rules.help_topics:
        pattern = topic.recognise.subject_pattern
        if pattern is not None and search(pattern, subject):
            return topic, "subject"
    found = _body_topic(parsed.new_text, topics)
    if found is not None:
        return found, "body"
    if rules.default_help_topic is not None and rules.default_help_topic in topics:
        return topics[rules.default_help_topic], "default"
    return None, "none"


def _facts(
    parsed: ParsedMail, envelope: Envelope, topic: str | None, rules: CompiledRules, verdict: Verdict = NO_VERDICT,
    channel: str = "email",
) -> Facts:
    return Facts(
        sender=parsed.from_addr.email if parsed.from_addr else envelope.mail_from.lower(),
        recipients=tuple(_recipients(parsed, envelope)),
        subject=parsed.subject,
        body=parsed.new_text,
        body_full=parsed.text,
        help_topic=topic,
        headers=decode_headers(parsed.raw_headers, rules.header_names) if rules.needs_headers else {},
        attachments=tuple(a.filename for a in parsed.attachments if not a.inline),
        received_at=envelope.received_at,
        spam=verdict.spam,
        spam_score=verdict.score,
        dmarc=verdict.dmarc,
        channel=channel,
    )


Draft = dict[str, Any]  # RouteDecision's fields while rules apply; one RouteDecision is built at the end


def _topic(draft: Draft, topic: HelpTopic | None, via: str) -> None:
    draft["help_topic_via"] = via
    if topic is None:
        return
    draft.update(
        help_topic=topic.name,
        department=topic.department,
        priority=topic.priority,
        sla_plan=topic.sla,
        ack_template=topic.ack_template,
    )


def _apply(draft: Draft, name: str, then: Then, changes: list[str]) -> None:
    fields, lines = then.applied(name)  # all but tags and collaborators, which add up
    draft.update(fields)
    if then.tags:
        draft["tags"] += then.tags
    if then.collaborators:
        draft["collaborators"] += then.collaborators
    changes += lines


def route(
    parsed: ParsedMail,
    envelope: Envelope,
    rules: RulesFile,
    mailbox_topic: str | None,
    compiled: CompiledRules,
    explain: bool = True,
    verdict: Verdict = NO_VERDICT,
    chosen_topic: str | None = None,
    channel: str = "email",
) -> RouteDecision:
    """``explain``: trace every rule (``rules test``, dry runs); intake needs only the decision.
    ``verdict``: the trusted relay's (``mtaverdict.py``), for the ``spam``/``spam_score``/``dmarc`` fields."""
    topic, via = find_topic(parsed, envelope, rules, mailbox_topic, chosen_topic)
    facts = _facts(parsed, envelope, topic.name if topic else None, compiled, verdict, channel)
    matched, trace = compiled.evaluate(facts, explain)
    draft: Draft = {
        "help_topic": None,
        "department": None,
        "priority": Priority.NORMAL,
        "sla_plan": None,
        "assignee": None,
        "tags": [],
        "collaborators": [],
    }
    _topic(draft, topic, via)
    topics = {t.name: t for t in rules.help_topics}
    changes: list[str] = []
    no_ack_by_rule = False
    for name, then in matched:
        if then.help_topic and then.help_topic in topics:  # a topic brings its defaults; later actions override
            topic = topics[then.help_topic]
            _topic(draft, topic, f"rule {name}")
            changes.append(f"rule {name} set help_topic={then.help_topic}")
        _apply(draft, name, then, changes)
        if then.no_autoreply and not no_ack_by_rule:
            no_ack_by_rule = True
            changes.append(f"rule {name} suppressed the acknowledgment")
    no_ack = no_ack_by_rule or (topic is not None and not topic.auto_ack)
    draft["tags"] = tuple(dict.fromkeys(draft["tags"]))
    draft["collaborators"] = tuple(dict.fromkeys(draft["collaborators"]))
    return RouteDecision(
        **draft, no_autoreply=no_ack, trace=trace, changes=tuple(changes), matched=tuple(n for n, _ in matched)
    )
