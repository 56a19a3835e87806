"""``mailgate forget ADDRESS``: one person erased on request, found in every table, and only them.

The mail comes in through the real SMTP listener (a ticket with an attachment, a Cc on someone else's
ticket, an agent's reply that names them, a mail kept in quarantine), then the real CLI erases them and
the whole database is searched for their address: the test that a forgotten row cannot pass.
"""

from __future__ import annotations

import json
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mailgate.config import load_config
from tests.conftest import (
    MakeConfig,
    Service,
    cli_json,
    outgoing_mail,
    run_cli,
    smtp_deliver,
    sql_rows,
    start_service,
    wait_until,
)
from tests.support.dbdump import dump

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}],
    "departments": [{"name": "Support", "members": ["jane@example.com"]}],
}
RULES = {"help_topics": [{"name": "General", "department": "Support"}], "default_help_topic": "General"}
MAIN: dict[str, Any] = {"intake": {"limits": {"max_headers": 12}}}
PAT_TAGGED = "Pat+Shop@Customer.Example"  # how Pat writes: a +tag and capitals
QUINN = "quinn@customer.example"
PATRICK = "patrick@customer.example"  # a neighbour whose address starts like Pat's
ATTACHMENT = b"%PDF-1.4 Pat's passport scan\n"


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Any:
    svc = start_service(make_config(agents=AGENTS, rules=RULES, **MAIN), tmp_path / "serve.log")
    yield svc
    svc.stop()


def _send(svc: Service, sender: str, subject: str, body: str, *, to: str = "support@example.com",
          cc: str | None = None, attachment: bytes | None = None, extra: int = 0, **headers: str) -> str:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    mid = f"<{time.monotonic_ns()}@mail.example>"
    msg["Message-ID"] = mid
    if cc:
        msg["Cc"] = cc
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    for i in range(extra):  # past intake.limits.max_headers: kept in quarantine
        msg[f"X-Filler-{i}"] = "x"
    msg.set_content(body)
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="passport.pdf")
    envelope = sender.split("<")[-1].rstrip(">")
    code, answer = smtp_deliver(svc.host, svc.port, msg.as_bytes(), mail_from=envelope, rcpts=(to,))
    assert code == 250, answer
    return mid


def _mails_to(svc: Service, address: str, contains: str = "") -> list[EmailMessage]:
    out = []
    for m in outgoing_mail(svc.config):
        body = m.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        if address in {a.addr_spec.lower() for a in m["To"].addresses} and contains in m["Subject"] + text:
            out.append(m)
    return out


def _number(svc: Service, address: str, subject: str) -> str:
    [ack] = wait_until(lambda: _mails_to(svc, address, subject), what=f"ack to {address}", log=svc.output)
    return str(ack["Subject"].split("[#")[1].split("]")[0])


def _processed(svc: Service, count: int) -> None:
    wait_until(lambda: sql_rows(svc.config, "SELECT count(*) FROM inbound WHERE processed_at IS NOT NULL")[0][0]
               >= count, what=f"{count} mails processed", log=svc.output)


def _execute(config: Path, statement: str) -> None:
    engine = sa.create_engine(load_config(config).database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _blob(config: Path, sha256: str) -> Path:
    return load_config(config).main.state_dir / "attachments" / sha256[:2] / sha256[2:4] / sha256


def _traces(text: str) -> list[str]:
    """The lines that still hold Pat's address (any form) or name."""
    needles = ("pat@customer.example", "pat+shop@customer.example", "pat example")
    return [line[:300] for line in text.splitlines() if any(n in line.lower() for n in needles)]


def _world(desk: Service) -> dict[str, str]:
    """Pat's own ticket (+tag, capitals, an attachment, an agent's answer naming Pat), Quinn's ticket with
    Pat in Cc, Patrick's ticket, a quarantined mail from Pat, and a bounce suppression of Pat's address."""
    _send(desk, f"Pat Example <{PAT_TAGGED}>", "Passport upload", "Here is my passport, Pat Example.",
          attachment=ATTACHMENT)
    pat = _number(desk, "pat+shop@customer.example", "Passport upload")
    [alert] = wait_until(lambda: _mails_to(desk, "jane@example.com", "Passport upload"), log=desk.output)
    _send(desk, "Jane Doe <jane@example.com>", f"Re: {alert['Subject']}",
          "Hello Pat Example, we got it. Write to pat@customer.example if it changes.",
          to=alert["Reply-To"], In_Reply_To=alert["Message-ID"])
    _send(desk, f"Quinn <{QUINN}>", "Team access", "Please give Pat access too.",
          cc="Pat Example <pat@customer.example>")
    quinn = _number(desk, QUINN, "Team access")
    _send(desk, f"Patrick <{PATRICK}>", "My own problem", "Patrick here.")
    patrick = _number(desk, PATRICK, "My own problem")
    _send(desk, f"Pat Example <{PAT_TAGGED}>", "Too many headers", "kept aside", extra=20)
    _processed(desk, 5)
    _execute(desk.config, "INSERT INTO suppression (address, until, reason, created_at) VALUES "
                          "('pat@customer.example', '2099-01-01 00:00:00', 'bounced', '2026-01-01 00:00:00')")
    return {"pat": pat, "quinn": quinn, "patrick": patrick}


def test_forget_erases_a_person_everywhere_and_only_them(desk: Service) -> None:
    tickets = _world(desk)
    wait_until(lambda: not sql_rows(desk.config, "SELECT id FROM outbox WHERE status IN ('pending', 'sending')"),
               what="outbox drained", log=desk.output)
    [(sha,)] = sql_rows(desk.config, "SELECT sha256 FROM attachment")
    assert _blob(desk.config, sha).exists()
    [(quarantined,)] = sql_rows(desk.config, "SELECT id FROM inbound WHERE status = 'quarantined'")
    desk.stop()  # so that the database holds still for the before/after comparison (heartbeats, outbox)
    before = dump(desk.config)
    assert _traces(before)

    dry = run_cli(desk.config, "forget", "pat@customer.example", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert dump(desk.config) == before  # a dry run writes nothing
    assert _blob(desk.config, sha).exists()

    done = run_cli(desk.config, "forget", "PAT@Customer.Example", "--json")  # another case than stored
    assert done.code == 0, done.stderr
    report = json.loads(done.stdout)
    assert {**report, "dry_run": True} == planned  # the dry run said exactly what was done
    assert {t["number"] for t in report["tickets"]} == {tickets["pat"], tickets["quinn"]}
    assert all(t["open"] for t in report["tickets"])  # both still open: erasure does not wait for closing
    assert report["messages_redacted"] == 1 and report["attachments_deleted"] == 1
    assert report["mail_without_ticket"] == 1 and report["suppressions_removed"] == 1
    assert report["files_deleted"] == 1 and not _blob(desk.config, sha).exists()

    after = dump(desk.config)
    assert not _traces(after), _traces(after)  # no table, no raw mail, no JSON record holds the address or the name
    assert PATRICK in after and QUINN in after  # the neighbour and the colleague are untouched
    assert "Patrick here." in after and "Please give [erased] access too." not in after  # words of others stay

    pat = cli_json(desk.config, "tickets", "show", tickets["pat"])
    assert pat["requester"] == "erased@erased.invalid"
    customer, agent = pat["messages"][0], pat["messages"][1]
    assert customer["body"] == "[erased on request]"
    assert customer["attachments"][0]["purged"] is True and customer["attachments"][0]["sha256"] is None
    assert agent["kind"] == "agent" and "we got it" in agent["body"] and "Pat Example" not in agent["body"]
    quinn = cli_json(desk.config, "tickets", "show", tickets["quinn"])
    assert quinn["requester"] == QUINN and "Please give Pat access too." in quinn["messages"][0]["body"]
    shown = run_cli(desk.config, "tickets", "show", tickets["pat"])
    assert "purged: the file was deleted" in shown.stdout
    for key in (tickets["pat"], tickets["quinn"], f"id:{quarantined}"):
        explained = run_cli(desk.config, "explain", key, "--json")
        assert explained.code == 0 and _traces(explained.stdout) == [], explained.stdout
    kept = run_cli(desk.config, "quarantine", "show", str(quarantined))
    assert kept.code == 1 and "its bytes are not kept" in kept.stderr and not _traces(kept.stdout + kept.stderr)
    events = sql_rows(desk.config, "SELECT detail FROM event WHERE kind = 'erased'")
    assert len(events) == 2 and all("erased on request" in d for (d,) in events)

    again = run_cli(desk.config, "forget", "pat+other@customer.example")  # the second run finds nothing
    assert again.code == 0 and "nothing to erase" in again.stdout, again.stdout
    assert dump(desk.config) == after


def test_forget_says_what_it_does_to_an_open_ticket(desk: Service) -> None:
    _send(desk, f"Pat Example <{PAT_TAGGED}>", "Still broken", "It is still broken.")
    number = _number(desk, "pat+shop@customer.example", "Still broken")
    out = run_cli(desk.config, "forget", "pat@customer.example")
    assert out.code == 0, out.stderr
    assert f"{number} (open)" in out.stdout and f"NOTE: ticket {number} is still open" in out.stdout


def test_an_agent_is_not_forgotten_without_agent(desk: Service) -> None:
    _send(desk, f"Pat Example <{PAT_TAGGED}>", "Printer", "It jams.")
    number = _number(desk, "pat+shop@customer.example", "Printer")
    [alert] = wait_until(lambda: _mails_to(desk, "jane@example.com", "Printer"), log=desk.output)
    _send(desk, "Jane Doe <jane@example.com>", f"Re: {alert['Subject']}", "Open the tray, Pat.",
          to=alert["Reply-To"], In_Reply_To=alert["Message-ID"])
    wait_until(lambda: len(cli_json(desk.config, "tickets", "show", number)["messages"]) == 2, log=desk.output)
    refused = run_cli(desk.config, "forget", "Jane@Example.com")
    assert refused.code == 1 and "an agent's address" in refused.stdout
    assert "jane@example.com" in dump(desk.config)
    own = run_cli(desk.config, "forget", "support@example.com", "--agent")
    assert own.code == 1 and "own addresses" in own.stdout
    erased = run_cli(desk.config, "forget", "jane@example.com", "--agent", "--json")
    assert erased.code == 0, erased.stderr
    assert json.loads(erased.stdout)["messages_redacted"] == 0  # an agent's words are the desk's record
    reply = cli_json(desk.config, "tickets", "show", number)["messages"][1]
    assert reply["body"].startswith("Open the tray") and reply["from"] == "erased@erased.invalid"


def test_not_an_address_is_a_usage_error(desk: Service) -> None:
    out = run_cli(desk.config, "forget", "pat")
    assert out.code == 1 and "not an email address" in out.stderr
