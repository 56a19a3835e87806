"""Retention: old raw mail, attachment files and closed tickets purged, by hand (``retention run``) and by
the daemon's job, with mail in through the real SMTP listener and tickets closed by their requester.

The attacker's and edge cases: a file shared with a ticket that is kept stays; an old customer's open
ticket is never touched; a dry run writes nothing; two runs at once do everything once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import load_config
from tests.conftest import (
    REPO,
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
PAT, QUINN = "pat@customer.example", "quinn@other.example"
SHARED = b"%PDF-1.4 the price list everybody sends\n"
OWN = b"%PDF-1.4 Pat's contract\n"
MAIN: dict[str, Any] = {
    "tickets": {"customer_close": {"enabled": True}},
    "intake": {"limits": {"max_headers": 12}},
}


def _rules(retention: dict[str, str] | None = None) -> dict[str, Any]:
    topic: dict[str, Any] = {"name": "General", "department": "Support"}
    if retention:
        topic["retention"] = retention
    return {"help_topics": [topic], "default_help_topic": "General"}


def _send(svc: Service, sender: str, subject: str, body: str, *, to: str = "support@example.com",
          attachments: tuple[tuple[str, bytes], ...] = (), extra: int = 0, **headers: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = f"<{time.monotonic_ns()}@mail.example>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    for i in range(extra):  # past intake.limits.max_headers: kept in quarantine
        msg[f"X-Filler-{i}"] = "x"
    msg.set_content(body)
    for filename, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=filename)
    envelope = sender.split("<")[-1].rstrip(">")
    code, answer = smtp_deliver(svc.host, svc.port, msg.as_bytes(), mail_from=envelope, rcpts=(to,))
    assert code == 250, answer


def _acks(svc: Service, address: str, subject: str) -> list[EmailMessage]:
    return [m for m in outgoing_mail(svc.config)
            if address in {a.addr_spec for a in m["To"].addresses} and subject in m["Subject"]]


def _open(svc: Service, sender: str, subject: str, *attachments: tuple[str, bytes]) -> tuple[str, EmailMessage]:
    address = sender.split("<")[-1].rstrip(">")
    _send(svc, sender, subject, f"{subject}, please help.", attachments=attachments)
    [ack] = wait_until(lambda: _acks(svc, address, subject), what=f"ack of {subject}", log=svc.output)
    return str(ack["Subject"].split("[#")[1].split("]")[0]), ack


def _close(svc: Service, ack: EmailMessage, number: str) -> None:
    """The requester answers our acknowledgment with #close, as a mail client does."""
    _send(svc, f"Pat Example <{PAT}>", f"Re: {ack['Subject']}", "Solved, thanks.\n#close\n", to=ack["Reply-To"],
          In_Reply_To=ack["Message-ID"], References=ack["Message-ID"])
    wait_until(lambda: cli_json(svc.config, "tickets", "show", number)["status"] == "closed",
               what=f"{number} closed", log=svc.output)
    wait_until(lambda: not sql_rows(svc.config, "SELECT id FROM outbox WHERE status IN ('pending', 'sending')"),
               what="the closing notices sent", log=svc.output)


def _blob(config: Path, data: bytes) -> Path:
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    return load_config(config).main.state_dir / "attachments" / sha[:2] / sha[2:4] / sha


def _raw_count(config: Path, number: str) -> int:
    return int(sql_rows(config, f"SELECT count(*) FROM inbound_raw r JOIN inbound i ON i.id = r.inbound_id "
                                f"JOIN ticket t ON t.id = i.ticket_id WHERE t.number = '{number}'")[0][0])


def _retention(config: Path, *args: str) -> dict[str, Any]:
    out = run_cli(config, "retention", "run", "--json", *args)
    assert out.code == 0, out.stderr
    return dict(json.loads(out.stdout))


# --------------------------------------------------------------------------- by hand
def test_raw_mail_and_attachments_of_a_closed_ticket_are_purged_and_shared_files_stay(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(agents=AGENTS, rules=_rules({"raw": "1s", "attachments": "1s"}), **MAIN)
    svc = start_service(config, tmp_path / "serve.log")
    try:
        old, ack = _open(svc, f"Pat Example <{PAT}>", "Invoice question", ("prices.pdf", SHARED))
        kept, _ = _open(svc, f"Quinn <{QUINN}>", "Prices", ("prices.pdf", SHARED))
        still_open, _ = _open(svc, f"Pat Example <{PAT}>", "Second question")  # the same old customer
        _close(svc, ack, old)
        wait_until(lambda: old in _retention(config, "--dry-run")["raw_mail"]["tickets"],
                   what="the closed ticket's raw mail past its age", log=svc.output)
    finally:
        svc.stop()
    before = dump(config)
    planned = _retention(config, "--dry-run")
    assert dump(config) == before  # nothing written
    assert planned["raw_mail"] == {"count": 2, "tickets": [old], "without_ticket": 0}  # the question and #close
    assert planned["attachments"] == {"count": 1, "tickets": [old]} and planned["files_deleted"] == 0

    done = _retention(config)
    assert {**done, "dry_run": True} == planned
    assert _raw_count(config, old) == 0
    assert _raw_count(config, kept) == 1 and _raw_count(config, still_open) == 1
    assert _blob(config, SHARED).exists()  # Quinn's open ticket still has it
    shown = cli_json(config, "tickets", "show", old)
    assert shown["messages"][0]["attachments"][0]["purged"] is True
    assert shown["requester"] == PAT  # raw and files only: the ticket itself stays as it was
    assert cli_json(config, "tickets", "show", kept)["messages"][0]["attachments"][0]["purged"] is False
    assert cli_json(config, "tickets", "show", still_open)["status"] == "open"

    after = dump(config)
    again = _retention(config)
    assert again["raw_mail"]["count"] == 0 and again["attachments"]["count"] == 0
    assert dump(config) == after  # the second run does nothing


def test_two_runs_at_once_do_everything_once(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(agents=AGENTS, rules=_rules(), retention={"tickets": "1s", "batch_size": 1}, **MAIN)
    svc = start_service(config, tmp_path / "serve.log")
    numbers = []
    try:
        for i in range(3):
            number, ack = _open(svc, f"Pat Example <{PAT}>", f"Question {i}")
            _close(svc, ack, number)
            numbers.append(number)
    finally:
        svc.stop()
    wait_until(lambda: len(_retention(config, "--dry-run")["tickets_anonymised"]["tickets"]) == 3,
               what="three tickets past their age")
    runs = [subprocess.Popen([sys.executable, "-m", "mailgate", "retention", "run", "--json", "-c", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO) for _ in range(2)]
    reports = []
    for proc in runs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        reports.append(json.loads(out))
    done = sorted(n for r in reports for n in r["tickets_anonymised"]["tickets"])
    assert done == sorted(numbers)  # each ticket by one of the two, none twice
    events = sql_rows(config, "SELECT ticket_id, count(*) FROM event WHERE kind = 'anonymised' GROUP BY ticket_id")
    assert sorted(c for _, c in events) == [1, 1, 1]


# --------------------------------------------------------------------------- by the daemon's job
def test_the_daemon_anonymises_old_closed_tickets_and_leaves_open_ones(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(agents=AGENTS, rules=_rules(),
                         retention={"raw": "1s", "tickets": "1s", "run_every": "1s"}, **MAIN)
    svc = start_service(config, tmp_path / "serve.log")
    try:
        _send(svc, "Stranger <eve@else.example>", "Too many headers", "kept aside", extra=20)
        old, ack = _open(svc, f"Pat Example <{PAT}>", "Contract", ("prices.pdf", SHARED), ("contract.pdf", OWN))
        kept, _ = _open(svc, f"Quinn <{QUINN}>", "Prices", ("prices.pdf", SHARED))
        still_open, _ = _open(svc, f"Pat Example <{PAT}>", "Another question")
        _close(svc, ack, old)
        shown = wait_until(lambda: (t := cli_json(config, "tickets", "show", old))["requester"] != PAT and t,
                           what="the closed ticket made anonymous by the job", log=svc.output)
        wait_until(lambda: not _blob(config, OWN).exists(), what="Pat's own file deleted", log=svc.output)
        wait_until(lambda: sql_rows(config, "SELECT count(*) FROM inbound_raw r JOIN inbound i ON i.id = r.inbound_id "
                                            "WHERE i.status = 'quarantined'") == [(0,)],
                   what="the quarantined mail's bytes purged by the default age", log=svc.output)
        assert "retention run" in svc.output()
    finally:
        svc.stop()
    assert shown["requester"] == "erased@erased.invalid"
    customer = [m for m in shown["messages"] if m["kind"] == "customer"]
    assert customer and all(m["body"] == "[removed by the retention policy]" for m in customer)
    assert all(a["purged"] for m in shown["messages"] for a in m["attachments"])
    assert _blob(config, SHARED).exists()  # still needed by Quinn's open ticket
    assert _raw_count(config, old) == 0
    assert cli_json(config, "tickets", "show", still_open)["requester"] == PAT  # the old customer's open ticket
    assert _raw_count(config, still_open) == 1 and _raw_count(config, kept) == 1
    text = "\n".join(line for line in dump(config).splitlines() if line.startswith(("ticket:", "participant:",
                                                                                   "message:", "event:")))
    anonymised = [line for line in text.splitlines() if f"'{old}'" in line]
    assert anonymised and PAT not in anonymised[0] and "Pat Example" not in anonymised[0]
    [(detail,)] = sql_rows(config, "SELECT detail FROM event WHERE kind = 'anonymised'")
    assert "anonymised 1s after closing" in detail and "@" not in detail


@pytest.mark.parametrize("value", ["90 days", "0d", "soon"])
def test_a_bad_age_is_reported_with_its_line(make_config: MakeConfig, value: str) -> None:
    config = make_config(agents=AGENTS, rules=_rules({"raw": value}))
    out = run_cli(config, "check-config")
    assert out.code == 1
    rules = config.parent / "rules.yaml"
    line = next(i for i, text in enumerate(rules.read_text().splitlines(), 1) if "raw:" in text)
    assert f"{rules}:{line}: not an age: '{value}' (use e.g. 90d, 12w, 1y, or never)" in out.stderr, out.stderr
