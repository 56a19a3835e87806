"""Mail that is stored but held, end to end over the real SMTP listener: spam verdicts and flood control.

The relay is played by the test's own SMTP client on 127.0.0.1: listed in ``trusted_relays`` it is a
relay whose verdict counts; left out, it is a stranger sending straight to our port. Its header is
what a relay writes: its verdict fields above the ``Received:`` of the hop where it took the mail
from the Internet, and beneath that hop whatever the sender wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    MakeConfig,
    Service,
    cli_json,
    make_mail,
    run_cli,
    smtp_deliver,
    sql_rows,
    start_service,
    wait_until,
)

ENTRY = ("Received: from bulk.sender.example (unknown [203.0.113.66])\r\n\tby mx1.example.com (Postfix) with ESMTP "
         "id 4F2A81C0042\r\n\tfor <support@example.com>; Mon,  2 Mar 2026 10:00:02 +0100 (CET)\r\n")
RELAY_SPAM = "X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=9.3 required=5.0 tests=BAYES_99,RDNS_NONE\r\n"
RELAY_HAM = "X-Spam-Flag: NO\r\nX-Spam-Status: No, score=0.4 required=5.0 tests=HTML_MESSAGE\r\n"
FORGED_HAM = "X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-20.0 required=5.0\r\n"
FORGED_DMARC = "Authentication-Results: mx1.example.com; dmarc=pass header.from=customer.example\r\n"
RULES = {
    "help_topics": [{"name": "General", "department": "Support"}, {"name": "Junk", "auto_ack": False}],
    "default_help_topic": "General",
    "rules": [
        {"name": "dmarc-vip", "when": {"all": [{"field": "dmarc", "op": "equals", "value": "pass"}]},
         "then": {"priority": "high"}},
        {"name": "high-score", "when": {"all": [{"field": "spam_score", "op": "above", "value": 5}]},
         "then": {"tags": ["scored"]}},
    ],
}


def mail(subject: str, *, top: str = "", below: str = "", sender: str = "Pat <pat@customer.example>",
         message_id: str | None = None) -> bytes:
    """The relay's fields, its entry hop, then the sender's own header and body."""
    return (top + ENTRY + below).encode() + make_mail(subject, sender=sender, message_id=message_id)


def deliver(service: Service, raw: bytes, mail_from: str = "pat@customer.example") -> None:
    code, text = smtp_deliver(service.host, service.port, raw, mail_from=mail_from)
    assert code == 250, (code, text)


def inbound(config: Path) -> list[tuple[Any, ...]]:
    return sql_rows(config, "SELECT id, status, hold, reason, ticket_id FROM inbound ORDER BY id")


def outbox_kinds(config: Path, kind: str, to: str | None = None) -> list[tuple[Any, ...]]:
    rows = sql_rows(config, f"SELECT dedupe_key, recipient FROM outbox WHERE kind = '{kind}' ORDER BY id")
    return [r for r in rows if to is None or r[1] == to]


def wait_stored(service: Service, count: int) -> list[tuple[Any, ...]]:
    return list(wait_until(lambda: (rows := inbound(service.config)) and len(rows) >= count
                           and all(r[1] != "received" for r in rows) and rows,
                           what=f"{count} stored mail(s)", log=service.output))


@pytest.fixture
def relay_config(make_config: MakeConfig) -> Path:
    """The relay writes its Authentication-Results above its entry hop, so no authserv-id needs listing:
    one with its id beneath that hop (which a relay following RFC 8601 would have removed) is not read."""
    return make_config(rules=RULES, intake={"spam": {"trusted_relays": ["127.0.0.1"]}}, admin_email="it@example.com")


def test_spam_from_a_trusted_relay_is_held_and_released_once(relay_config: Path, tmp_path: Path) -> None:
    service = start_service(relay_config, tmp_path / "serve.log")
    try:
        # the relay says spam; the sender's own "not spam" and "dmarc=pass" beneath its entry hop change nothing
        deliver(service, mail("You won", top=RELAY_SPAM, below=FORGED_HAM + FORGED_DMARC, message_id="<s1@x>"))
        deliver(service, mail("Printer on fire", top=RELAY_HAM, message_id="<h1@x>"))
        rows = wait_stored(service, 2)
        spam_id = rows[0][0]
        assert rows[0][1:3] == ("quarantined", "spam") and rows[0][3].startswith("spam: X-Spam-Flag: YES"), rows
        assert rows[1][1] == "accepted" and rows[1][2] is None, rows
        acks = outbox_kinds(relay_config, "ack_new")
        assert len(acks) == 1  # the ham only: spam is never acknowledged
        alerts = sql_rows(relay_config, "SELECT count(*) FROM outbox WHERE substr(kind, 1, 6) = 'alert_'")[0][0]
        assert alerts == 1  # and never alerts the agents

        listed = cli_json(relay_config, "quarantine", "list", "--spam")
        assert [r["id"] for r in listed] == [spam_id] and listed[0]["hold"] == "spam"
        assert cli_json(relay_config, "quarantine", "list", "--flood") == []
        record = cli_json(relay_config, "explain", str(spam_id))
        verdict = (record[0] if isinstance(record, list) else record)["spam"]
        assert verdict["trusted"] and verdict["spam"] and verdict["dmarc"] == "unknown", verdict
        told = run_cli(relay_config, "explain", str(spam_id)).stdout
        assert "spam verdict:   spam=true score=9.3 dmarc=unknown (trusted: delivered over SMTP by 127.0.0.1" in told

        every = run_cli(relay_config, "quarantine", "reprocess")  # "replay everything" never releases spam
        assert every.code == 0 and "left alone" in every.stdout, every.stdout
        assert inbound(relay_config)[0][1] == "quarantined"

        released = run_cli(relay_config, "quarantine", "reprocess", str(spam_id))
        assert released.code == 0 and f"#{spam_id}: accepted ticket" in released.stdout, released.stderr
        again = run_cli(relay_config, "quarantine", "reprocess", str(spam_id))
        assert "not quarantined (accepted)" in again.stdout, again.stdout
        assert len(outbox_kinds(relay_config, "ack_new")) == 2  # released: acknowledged once, not twice
        after = inbound(relay_config)[0]
        assert after[1] == "accepted" and after[4] is not None
    finally:
        service.stop()


def test_rules_test_shows_the_verdict_whether_it_was_believed_and_why(relay_config: Path, tmp_path: Path) -> None:
    eml = tmp_path / "spam.eml"
    eml.write_bytes(mail("You won", top=RELAY_SPAM + "Authentication-Results: mx1.example.com; dmarc=pass "
                         "header.from=customer.example\r\n", below=FORGED_HAM))
    result = run_cli(relay_config, "rules", "test", str(eml), "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    spam = report["spam"]
    assert spam["trusted"] and spam["spam"] and spam["score"] == 9.3 and spam["dmarc"] == "pass", spam
    assert "203.0.113.66" in spam["why"] and any("below the entry hop" in i for i in spam["ignored"]), spam
    matched = {r["name"] for r in report["rules"] if r["matched"]}
    assert matched == {"dmarc-vip", "high-score"}, report["rules"]
    assert report["outcome"]["status"] == "quarantined" and report["outcome"]["reason"].startswith("spam:")
    text = run_cli(relay_config, "rules", "test", str(eml))
    assert "spam verdict: spam=true spam_score=9.3 dmarc=pass (trusted:" in text.stdout, text.stdout


def test_a_stranger_sending_straight_to_us_gains_nothing_and_cannot_get_mail_held(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """Our port reached by anyone but the relay (192.0.2.0/24 here; the test connects from 127.0.0.1):
    no header of the mail is believed, neither "not spam, dmarc=pass" nor "spam"."""
    config = make_config(rules=RULES, intake={"spam": {"trusted_relays": ["192.0.2.0/24"],
                                                       "authserv_ids": ["mx1.example.com"]}})
    service = start_service(config, tmp_path / "serve.log")
    try:
        deliver(service, (FORGED_HAM + FORGED_DMARC).encode() + make_mail("Cheap pills", message_id="<f1@x>"))
        deliver(service, b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=50\r\n"
                + make_mail("Printer on fire", sender="Lee <lee@other.example>", message_id="<f2@x>"),
                mail_from="lee@other.example")
        rows = wait_stored(service, 2)
        assert [r[1:3] for r in rows] == [("accepted", None), ("accepted", None)], rows
        record = cli_json(config, "explain", str(rows[0][0]))
        verdict = (record[0] if isinstance(record, list) else record)["spam"]
        assert not verdict["trusted"] and verdict["dmarc"] == "unknown" and "not in intake.spam" in verdict["why"]
        shown = cli_json(config, "tickets", "list")
        assert all(t["priority"] != "high" for t in shown)  # the forged dmarc=pass did not reach the rule
    finally:
        service.stop()


FLOOD = {"per_sender": "3/10m", "per_domain": "5/10m", "exempt_domains": ["partner.example"]}


def test_a_flood_of_new_tickets_is_held_with_one_alert_and_replies_still_thread(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(intake={"flood": FLOOD}, admin_email="it@example.com")
    service = start_service(config, tmp_path / "serve.log")
    try:
        for i in range(6):
            deliver(service, make_mail(f"Problem {i}", message_id=f"<p{i}@customer.example>"))
        rows = wait_stored(service, 6)
        assert [r[1] for r in rows] == ["accepted"] * 3 + ["quarantined"] * 3, rows
        assert all(r[2] == "flood:sender" and r[3].startswith("flood: pat@customer.example") for r in rows[3:])
        assert len(outbox_kinds(config, "ack_new", "pat@customer.example")) == 3
        alerts = outbox_kinds(config, "admin_alert")
        assert len(alerts) == 1 and alerts[0][1] == "it@example.com" and "flood:sender" in alerts[0][0], alerts

        # during the flood, the same sender answers one of their tickets: threaded as ever
        number = cli_json(config, "tickets", "list")[0]["number"]
        deliver(service, make_mail(f"Re: [#{number}] Problem 0", message_id="<r1@customer.example>"))
        reply = wait_stored(service, 7)[6]
        assert reply[1] == "accepted" and reply[4] == rows[0][4], reply

        # addresses rotated within one domain trip the per-domain rung (5 in 10 min) on the 6th
        for i in range(7):
            deliver(service, make_mail(f"Issue {i}", sender=f"user{i}@rotating.example",
                                       message_id=f"<u{i}@rotating.example>"), mail_from=f"user{i}@rotating.example")
        rotated = wait_stored(service, 14)[7:]
        assert [r[1] for r in rotated] == ["accepted"] * 5 + ["quarantined"] * 2, rotated
        assert all(r[2] == "flood:domain" for r in rotated[5:]), rotated
        assert len(outbox_kinds(config, "admin_alert")) == 2  # one incident each

        # a public mail domain is counted per address only: six gmail.com customers are six tickets
        for i in range(6):
            deliver(service, make_mail(f"Help {i}", sender=f"someone{i}@gmail.com", message_id=f"<g{i}@gmail.com>"),
                    mail_from=f"someone{i}@gmail.com")
        assert [r[1] for r in wait_stored(service, 20)[14:]] == ["accepted"] * 6

        held = cli_json(config, "quarantine", "list", "--flood")
        assert len(held) == 5 and cli_json(config, "quarantine", "list", "--spam") == []
        first_held = rows[3][0]
        released = run_cli(config, "quarantine", "reprocess", str(first_held))
        assert f"#{first_held}: accepted ticket" in released.stdout, released.stdout + released.stderr
        assert "not quarantined" in run_cli(config, "quarantine", "reprocess", str(first_held)).stdout
        assert len(outbox_kinds(config, "ack_new", "pat@customer.example")) == 4  # the released one, once
        assert len(outbox_kinds(config, "admin_alert")) == 2
    finally:
        service.stop()


def test_flood_counts_survive_a_restart(make_config: MakeConfig, tmp_path: Path) -> None:
    """Counted from the database: a daemon started afresh goes on counting where the last one stopped."""
    config = make_config(intake={"flood": {"per_sender": "2/1h"}}, admin_email="it@example.com")
    service = start_service(config, tmp_path / "serve.log")
    try:
        for i in range(2):
            deliver(service, make_mail(f"Problem {i}", message_id=f"<a{i}@customer.example>"))
        wait_stored(service, 2)
    finally:
        service.stop()
    service = start_service(config, tmp_path / "serve2.log")
    try:
        deliver(service, make_mail("Problem 3", message_id="<a3@customer.example>"))
        rows = wait_stored(service, 3)
        assert [r[1] for r in rows] == ["accepted", "accepted", "quarantined"], rows
    finally:
        service.stop()
