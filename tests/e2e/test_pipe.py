"""Pipe intake: ``mailgate ingest`` as an MTA alias (``"|mailgate ingest"``) and for batch imports.

The MTA decides what to do with a mail from the exit code alone, so these
tests hold the contract from DESIGN: 0 stored, 65 refused by policy (reason
on stderr, the MTA bounces it), 75 could not store now (the MTA keeps the
mail and retries) with nothing stored. Every message of an mbox or a Maildir
is ingested, and the MTA's SENDER/RECIPIENT environment becomes the envelope.
The ``From sender date`` line Postfix puts before a piped mail is envelope, so
a retried delivery is still recognised as the same mail.
"""

from __future__ import annotations

import mailbox
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import (
    PATIENCE,
    REPO,
    DatabaseLocked,
    MakeConfig,
    cli_json,
    free_port,
    make_mail,
    run_cli,
    sql_rows,
)


def demo_rules(*extra: dict[str, Any]) -> dict[str, Any]:
    rules = yaml.safe_load((REPO / "config" / "rules.yaml").read_text())
    rules["rules"] = [*(rules.get("rules") or []), *extra]
    return dict(rules)


def acks(config: Path) -> list[dict[str, Any]]:
    """Queued automatic answers to customers (agents' alerts about new tickets left out)."""
    return [row for row in cli_json(config, "outbox", "list") if row["kind"].startswith("ack")]


def inbound_count(config: Path) -> int:
    return int(sql_rows(config, "SELECT count(*) FROM inbound")[0][0])


def test_message_on_stdin_is_stored_and_exits_0(config_path: Path) -> None:
    result = run_cli(config_path, "ingest", stdin=make_mail(message_id="<pipe-1@customer.example>"))
    assert result.code == 0, result.stderr
    [ticket] = cli_json(config_path, "tickets", "list")
    assert ticket["subject"] == "Printer on fire" and ticket["requester"] == "pat@customer.example"
    [ack] = acks(config_path)  # queued in the same transaction; serve sends it
    assert ack["kind"] == "ack_new" and ack["to"] == ["pat@customer.example"] and ack["status"] == "pending"
    again = run_cli(config_path, "ingest", stdin=make_mail(message_id="<pipe-1@customer.example>"))
    assert again.code == 0, again.stderr  # a re-delivery is fine for the MTA and stored once
    assert len(cli_json(config_path, "tickets", "list")) == 1


def test_rule_rejection_exits_65_with_the_reason_on_stderr(make_config: MakeConfig) -> None:
    config = make_config(rules=demo_rules({
        "name": "no-lottery",
        "when": {"any": [{"field": "subject", "op": "contains", "value": "lottery"}]},
        "then": {"reject": "We do not accept lottery announcements"},
    }))
    result = run_cli(config, "ingest", stdin=make_mail("You won the lottery", message_id="<spam@x.example>"))
    assert result.code == 65, (result.code, result.stderr)
    assert "We do not accept lottery announcements" in result.stderr
    assert cli_json(config, "tickets", "list") == []
    assert cli_json(config, "outbox", "list") == []
    assert run_cli(config, "ingest", stdin=make_mail(message_id="<fine@customer.example>")).code == 0


def test_oversize_message_is_refused_with_65(make_config: MakeConfig) -> None:
    config = make_config(intake={"smtp": {"max_message_size": "2KiB"}})
    result = run_cli(config, "ingest", stdin=make_mail(body="z" * 5000))
    assert result.code == 65, result.stderr
    assert "too large" in result.stderr
    assert cli_json(config, "tickets", "list") == []


# --------------------------------------------------------------------------- database unavailable: 75, nothing kept
def test_unreachable_postgresql_exits_75(make_config: MakeConfig) -> None:
    config = make_config(database={"url": f"postgresql+psycopg://mailgate@127.0.0.1:{free_port()}/nowhere"})
    result = run_cli(config, "ingest", stdin=make_mail())
    assert result.code == 75, result.stderr
    assert "Traceback" not in result.stderr


def test_database_path_that_cannot_be_opened_exits_75(make_config: MakeConfig, tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    config = make_config(database={"url": f"sqlite:///{tmp_path / 'a-directory.db'}"})
    result = run_cli(config, "ingest", stdin=make_mail())
    assert result.code == 75, result.stderr
    assert "Traceback" not in result.stderr


def test_database_folder_that_cannot_be_created_exits_75(make_config: MakeConfig, tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a folder")
    config = make_config(database={"url": f"sqlite:///{tmp_path / 'plain-file' / 'sub' / 'mailgate.db'}"})
    result = run_cli(config, "ingest", stdin=make_mail())
    assert result.code == 75, result.stderr
    assert "Traceback" not in result.stderr


def test_locked_database_exits_75_and_stores_nothing(config_path: Path) -> None:
    assert run_cli(config_path, "db", "upgrade").code == 0
    with DatabaseLocked(config_path):
        result = run_cli(config_path, "ingest", stdin=make_mail(), timeout=PATIENCE)
    assert result.code == 75, result.stderr
    assert inbound_count(config_path) == 0
    assert cli_json(config_path, "outbox", "list") == []
    assert run_cli(config_path, "ingest", stdin=make_mail()).code == 0  # the MTA's retry then succeeds
    assert inbound_count(config_path) == 1


# --------------------------------------------------------------------------- batches: mbox and Maildir
def _three(prefix: str) -> list[bytes]:
    return [make_mail(f"{prefix} question {i}", sender=f"user{i}@customer.example",
                      message_id=f"<{prefix}-{i}@customer.example>",
                      body=f"Question {i}.\r\nFrom the start of a line, mbox must quote this.") for i in range(3)]


def test_mbox_with_several_messages_ingests_every_one(config_path: Path, tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "import.mbox")
    for raw in _three("mbox"):
        box.add(mailbox.mboxMessage(raw))
    box.close()
    result = run_cli(config_path, "ingest", str(tmp_path / "import.mbox"))
    assert result.code == 0, result.stderr
    listed = cli_json(config_path, "tickets", "list")
    assert sorted(t["subject"] for t in listed) == [f"mbox question {i}" for i in range(3)]
    shown = cli_json(config_path, "tickets", "show", listed[0]["number"])
    assert "\nFrom the start of a line" in shown["messages"][0]["body"]  # mbox quoting undone


def test_maildir_ingests_every_message(config_path: Path, tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "import", create=True)
    for raw in _three("maildir"):
        box.add(raw)
    result = run_cli(config_path, "ingest", str(tmp_path / "import"))
    assert result.code == 0, result.stderr
    subjects = sorted(t["subject"] for t in cli_json(config_path, "tickets", "list"))
    assert subjects == [f"maildir question {i}" for i in range(3)]


def test_several_files_in_one_call(config_path: Path, tmp_path: Path) -> None:
    names = []
    for i, raw in enumerate(_three("file")):
        (tmp_path / f"{i}.eml").write_bytes(raw)
        names.append(str(tmp_path / f"{i}.eml"))
    result = run_cli(config_path, "ingest", *names)
    assert result.code == 0, result.stderr
    assert len(cli_json(config_path, "tickets", "list")) == 3


# --------------------------------------------------------------------------- the MTA's envelope
def _as_postfix_pipes_it(raw: bytes, when: str) -> bytes:
    """Postfix local(8) hands an alias command the mail behind a From_ line stamped with the delivery time."""
    return (f"From pat@customer.example  {when}\n".encode() + b"Return-Path: <pat@customer.example>\n"
            b"X-Original-To: support@example.com\n" + raw.replace(b"\r\n", b"\n"))


def test_postfix_from_line_is_envelope_not_content(config_path: Path) -> None:
    raw = make_mail(message_id="<postfix@customer.example>", body="Line one.\r\nFrom here on it breaks.")
    first = run_cli(config_path, "ingest", stdin=_as_postfix_pipes_it(raw, "Mon Mar  2 10:00:01 2026"))
    assert first.code == 0, first.stderr
    # Postfix retries (e.g. the exit status was lost): a new time stamp, the same mail, still one ticket
    again = run_cli(config_path, "ingest", stdin=_as_postfix_pipes_it(raw, "Mon Mar  2 10:05:42 2026"))
    assert again.code == 0, again.stderr
    # and the same mail reaching us without a From_ line (SMTP, IMAP) is recognised as well
    assert run_cli(config_path, "ingest", stdin=raw).code == 0
    [ticket] = cli_json(config_path, "tickets", "list")
    assert len(acks(config_path)) == 1
    shown = cli_json(config_path, "tickets", "show", ticket["number"])
    assert "\nFrom here on it breaks." in shown["messages"][0]["body"]  # an unquoted body line is kept as is
    [(stored,)] = sql_rows(config_path, "SELECT r.raw FROM inbound i JOIN inbound_raw r ON r.inbound_id = i.id "
                                        "WHERE i.status = 'accepted'")
    assert not bytes(stored).startswith(b"From ")



def test_sender_and_recipient_environment_become_the_envelope(config_path: Path) -> None:
    raw = make_mail("Printer on fire", to="it-team@customer-alias.example", message_id="<env@customer.example>")
    result = run_cli(config_path, "ingest", stdin=raw,
                     env={"SENDER": "bounces+pat@customer.example", "RECIPIENT": "outage@example.com"})
    assert result.code == 0, result.stderr
    [ticket] = cli_json(config_path, "tickets", "list")
    assert ticket["help_topic"] == "Business Critical Outage"  # routed by the envelope recipient
    [(mail_from, rcpts)] = sql_rows(config_path, "SELECT mail_from, rcpt_tos FROM inbound")
    assert mail_from == "bounces+pat@customer.example"
    assert "outage@example.com" in str(rcpts)
