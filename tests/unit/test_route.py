"""pipeline.route: help-topic recognition order, then the rules' actions folded into one RouteDecision,
with one line per change; facts come from real parsed mail (new text vs. quoted history, attachments,
To/Cc/envelope recipients, the time received)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from mailgate.domain import Envelope, Priority, RouteDecision, Status
from mailgate.pipeline.parse import parse
from mailgate.pipeline.route import route
from mailgate.rules.engine import CompiledRules
from mailgate.rules.schema import RulesFile

TOPICS: list[dict[str, Any]] = [
    {"name": "Outage", "recognise": {"addresses": ["outage@example.com"], "plus": "outage",
                                     "subject": "(?i)\\bis down\\b"},
     "department": "Sys Admin", "priority": "emergency", "sla": "critical"},
    {"name": "Billing", "recognise": {"plus": "billing"}, "department": "Billing", "priority": "low",
     "sla": "billing", "auto_ack": False, "ack_template": "billing_ack"},
    {"name": "Web Form", "department": "Support"},
    {"name": "General", "department": "Support", "priority": "normal", "sla": "standard"},
]
MONDAY_10_UTC = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def mail(subject: str = "Hello", body: str = "Hi.", *, to: str = "support@example.com", cc: str | None = None,
         attach: tuple[tuple[str, str], ...] = ()) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Pat <Pat@Customer.example>", to, subject
    if cc:
        msg["Cc"] = cc
    msg.set_content(body)
    for name, disposition in attach:
        msg.add_attachment(b"data", maintype="application", subtype="octet-stream", filename=name,
                           disposition=disposition)
    return msg.as_bytes()


def decide(raw: bytes, *rules: dict[str, Any], rcpt: tuple[str, ...] = (), mailbox_topic: str | None = None,
           at: datetime = MONDAY_10_UTC) -> RouteDecision:
    rules_file = RulesFile.model_validate({
        "help_topics": TOPICS, "default_help_topic": "General",
        "rules": [{"name": f"r{i}", **r} for i, r in enumerate(rules)],
    })
    envelope = Envelope("bounce@customer.example", rcpt, "smtp", at)
    return route(parse(raw), envelope, rules_file, mailbox_topic, CompiledRules(rules_file.rules))


def when(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"all": [{"field": field, "op": op, "value": value}]}


# --------------------------------------------------------------------------- help topic recognition
@pytest.mark.parametrize(
    ("raw", "rcpt", "mailbox", "topic", "via"),
    [
        (mail(to="outage@example.com"), (), None, "Outage", "address"),
        (mail(), ("OUTAGE@example.com",), None, "Outage", "address"),  # envelope recipient, caseless
        (mail(cc="outage@example.com"), (), "Billing", "Outage", "address"),  # Cc counts; address beats mailbox
        (mail(to="support+billing@example.com"), (), None, "Billing", "plus_address"),
        (mail(), (), "Web Form", "Web Form", "mailbox"),
        (mail("The website IS DOWN"), (), None, "Outage", "subject"),
        (mail(body="Name: Pat\n  Help Topic: Web Form  \nMessage: hi"), (), None, "Web Form", "body"),
        (mail(body="Help topic: Nonexistent"), (), None, "General", "default"),
    ],
)
def test_topic_recognition_order(raw: bytes, rcpt: tuple[str, ...], mailbox: str | None, topic: str,
                                 via: str) -> None:
    decision = decide(raw, rcpt=rcpt, mailbox_topic=mailbox)
    assert (decision.help_topic, decision.help_topic_via) == (topic, via)


def test_topic_brings_its_defaults() -> None:
    d = decide(mail(to="support+billing@example.com"))
    assert (d.department, d.priority, d.sla_plan) == ("Billing", Priority.LOW, "billing")
    assert d.no_autoreply and d.ack_template == "billing_ack"  # auto_ack: false
    assert d.action == "accept" and d.reject is None and d.changes == ()


def test_a_pathological_body_line_does_not_hang_topic_recognition() -> None:
    """The old ``^\\s*help topic\\s*:\\s*(.+?)\\s*$`` (re.M) was quadratic in blank lines and trailing spaces."""
    body = "\n" * 300_000 + "help topic: a" + " " * 300_000 + "b\nHelp Topic: Web Form\n"
    assert decide(mail(body=body)).help_topic == "Web Form"


# --------------------------------------------------------------------------- facts from the mail
def test_body_is_the_new_text_and_body_full_includes_the_quote() -> None:
    reply = mail("Re: x", "Thanks, done.\n\nOn Mon, 2 Mar 2026, Support wrote:\n> please refund\n")
    assert decide(reply, {"when": when("body", "contains", "refund"), "then": {"tags": ["x"]}}).tags == ()
    assert decide(reply, {"when": when("body_full", "contains", "refund"), "then": {"tags": ["x"]}}).tags == ("x",)


def test_recipient_covers_to_cc_and_envelope() -> None:
    rule = {"when": when("recipient", "equals", "sales@example.com"), "then": {"tags": ["sales"]}}
    assert decide(mail(to="Sales@Example.com"), rule).tags == ("sales",)
    assert decide(mail(cc="sales@example.com"), rule).tags == ("sales",)
    assert decide(mail(), rule, rcpt=("sales@example.com",)).tags == ("sales",)
    assert decide(mail(), rule).tags == ()


def test_attachments_from_the_parsed_mail_inline_parts_do_not_count() -> None:
    rule = {"when": when("has_attachment", "equals", True), "then": {"tags": ["files"]}}
    assert decide(mail(attach=(("report.pdf", "attachment"),)), rule).tags == ("files",)
    assert decide(mail(attach=(("logo.png", "inline"),)), rule).tags == ()
    named = {"when": when("attachment_name", "ends", ".pdf"), "then": {"tags": ["pdf"]}}
    assert decide(mail(attach=(("Report.PDF", "attachment"),)), named).tags == ("pdf",)


def test_received_is_the_envelopes_time() -> None:
    rule = {"when": when("received.weekday", "equals", "mon"), "then": {"tags": ["monday"]}}
    assert decide(mail(), rule).tags == ("monday",)
    assert decide(mail(), rule, at=datetime(2026, 3, 3, 10, 0, tzinfo=UTC)).tags == ()


# --------------------------------------------------------------------------- actions
def test_every_action_lands_in_the_decision_with_a_change_line() -> None:
    d = decide(mail(), {"when": {}, "then": {
        "department": "Sys Admin", "priority": "high", "sla": "critical", "assignee": "Jane@Example.com",
        "team": "Tier 2", "status": "awaiting_reply", "tags": ["vip", "vip", "q1"],
        "collaborators": ["Boss@Customer.example"], "no_autoreply": True, "reply": "thanks",
    }})
    assert (d.department, d.priority, d.sla_plan, d.assignee) == ("Sys Admin", Priority.HIGH, "critical",
                                                                   "jane@example.com")
    assert (d.team, d.status, d.tags, d.collaborators) == ("Tier 2", Status.AWAITING_REPLY, ("vip", "q1"),
                                                           ("boss@customer.example",))
    assert d.no_autoreply and d.canned_reply == "thanks" and d.action == "accept"
    assert d.changes == (
        "rule r0 set department=Sys Admin",
        "rule r0 set priority=high",
        "rule r0 set sla=critical",
        "rule r0 set team=Tier 2",
        "rule r0 set status=awaiting_reply",
        "rule r0 set reply=thanks",
        "rule r0 set assignee=jane@example.com",
        "rule r0 added tags vip, q1",
        "rule r0 added collaborators boss@customer.example",
        "rule r0 suppressed the acknowledgment",
    )


def test_round_robin_is_a_request_for_apply() -> None:
    d = decide(mail(), {"when": {}, "then": {"assignee": "round_robin:Tier 2"}})
    assert (d.assignee, d.assign_strategy, d.assign_team) == (None, "round_robin", "Tier 2")
    assert d.changes == ("rule r0 set assignee=round_robin:Tier 2",)
    later = decide(mail(), {"when": {}, "then": {"assignee": "least_loaded: Tier 2"}},
                   {"when": {}, "then": {"assignee": "jane@example.com"}})
    assert (later.assignee, later.assign_strategy, later.assign_team) == ("jane@example.com", None, None)


def test_a_rule_switching_topic_brings_its_defaults_and_keeps_other_actions() -> None:
    d = decide(
        mail(),
        {"when": {}, "then": {"priority": "high", "assignee": "jane@example.com", "tags": ["a"], "team": "T"}},
        {"when": {}, "then": {"help_topic": "Billing"}},
        {"when": {}, "then": {"tags": ["b"]}},
    )
    assert (d.help_topic, d.help_topic_via, d.priority, d.department) == ("Billing", "rule r1", Priority.LOW,
                                                                          "Billing")
    assert (d.assignee, d.tags, d.team) == ("jane@example.com", ("a", "b"), "T")
    assert d.no_autoreply and d.ack_template == "billing_ack"  # the new topic's auto_ack: false
    assert "rule r1 set help_topic=Billing" in d.changes


@pytest.mark.parametrize(
    ("fates", "action", "reject", "quarantine"),
    [
        ([{"reject": "No lottery mail, sorry."}], "reject", "No lottery mail, sorry.", None),
        ([{"discard": True}], "discard", None, None),
        ([{"quarantine": "executable attachment"}], "quarantine", None, "executable attachment"),
        ([{"reject": "no"}, {"discard": True}], "discard", None, None),  # the last rule that decides wins
        ([{"quarantine": "x"}, {"reject": "no"}], "reject", "no", None),
        ([{"reject": "no"}, {"priority": "high"}], "reject", "no", None),
    ],
)
def test_reject_discard_quarantine(fates: list[dict[str, Any]], action: str, reject: str | None,
                                   quarantine: str | None) -> None:
    d = decide(mail(), *({"when": {}, "then": then} for then in fates))
    assert (d.action, d.reject, d.quarantine) == (action, reject, quarantine)


def test_fate_change_lines() -> None:
    d = decide(mail(), {"when": {}, "then": {"reject": "No lottery."}}, {"when": {}, "then": {"discard": True}},
               {"when": {}, "then": {"quarantine": "odd"}})
    assert d.changes == ("rule r0 rejects the mail: No lottery.", "rule r1 discards the mail (stored, no ticket)",
                         "rule r2 quarantines the mail: odd")


def test_stop_ends_the_actions_too() -> None:
    d = decide(mail(), {"when": {}, "then": {"priority": "high"}, "stop": True},
               {"when": {}, "then": {"priority": "low"}})
    assert d.priority == Priority.HIGH
    assert [t.matched for t in d.trace] == [True, False]
