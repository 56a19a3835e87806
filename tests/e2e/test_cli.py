"""The admin's command line, run as real processes on real files.

Promises: ``check-config`` says OK (exit 0) or names every problem as
``file:line: message`` (exit 1); a mail that cannot be parsed is kept in
quarantine, where ``quarantine list|show|reprocess`` shows it byte for byte
and replays it without ever losing or duplicating it; ``outbox list|retry``
show and re-queue outgoing mail; ``rules test FILE --json`` prints the DESIGN
shape, agrees with what ingest would do, and stores nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PATIENCE, REPO, MakeConfig, cli_json, make_mail, run_cli, sql_rows


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def demo_rules(*extra: dict[str, Any]) -> dict[str, Any]:
    rules = yaml.safe_load((REPO / "config" / "rules.yaml").read_text())
    rules["rules"] = [*(rules.get("rules") or []), *extra]
    return dict(rules)


# --------------------------------------------------------------------------- check-config
def test_check_config_accepts_a_good_config(config_path: Path) -> None:
    result = run_cli(config_path, "check-config")
    assert result.code == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_names_file_and_line_of_every_problem(make_config: MakeConfig) -> None:
    config = make_config(rules=demo_rules(
        {"name": "typo-op", "when": {"all": [{"field": "subject", "op": "containz", "value": "x"}]}},
        {"name": "typo-field", "when": {"all": [{"field": "subjekt", "op": "equals", "value": "y"}]}},
    ))
    rules = config.parent / "rules.yaml"
    result = run_cli(config, "check-config")
    assert result.code == 1, result.stdout
    problems = result.stderr.strip().splitlines()
    assert any(p.startswith(f"{rules}:{_line_of(rules, 'containz')}:") and "containz" in p for p in problems), problems
    assert any(p.startswith(f"{rules}:{_line_of(rules, 'subjekt')}:") and "subjekt" in p for p in problems), problems
    assert "Traceback" not in result.stderr


def test_check_config_reports_an_unknown_key_in_mailgate_yaml(make_config: MakeConfig) -> None:
    config = make_config(intake={"smtp": {"max_mesage_size": "1MiB"}})
    result = run_cli(config, "check-config")
    assert result.code == 1
    [problem] = result.stderr.strip().splitlines()
    assert problem.startswith(f"{config}:{_line_of(config, 'max_mesage_size')}:"), problem
    assert "max_mesage_size" in problem


# --------------------------------------------------------------------------- quarantine
NOT_A_MAIL = {
    "empty": b"",
    "blank-lines-only": b"\r\n\r\n",
    "binary-junk": bytes(range(256)) * 4,
}


def _quarantined(config: Path) -> list[dict[str, Any]]:
    return list(cli_json(config, "quarantine", "list"))


@pytest.mark.parametrize("case", sorted(NOT_A_MAIL))
def test_unparseable_mail_is_quarantined_and_reprocess_never_loses_or_duplicates_it(
    config_path: Path, case: str
) -> None:
    raw = NOT_A_MAIL[case]
    stored = run_cli(config_path, "ingest", stdin=raw, env={"SENDER": "mta@customer.example"})
    assert stored.code == 0, stored.stderr  # kept: the MTA must not retry or bounce it
    [row] = _quarantined(config_path)
    assert row["reason"] and row["mail_from"] == "mta@customer.example"
    assert _show_bytes(config_path, row["id"]) == raw  # exactly what the MTA handed over

    for _ in range(2):  # replaying (even twice) leaves exactly one copy, byte for byte
        replay = run_cli(config_path, "quarantine", "reprocess")
        assert replay.code == 0, replay.stderr
        [again] = _quarantined(config_path)
        assert _show_bytes(config_path, again["id"]) == raw
    assert cli_json(config_path, "tickets", "list") == []
    assert cli_json(config_path, "outbox", "list") == []


def _show_bytes(config: Path, inbound_id: int) -> bytes:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mailgate", "quarantine", "show", str(inbound_id), "-c", str(config)],
                          capture_output=True, cwd=REPO, timeout=PATIENCE)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_quarantine_list_text_and_reprocess_by_id(config_path: Path) -> None:
    assert run_cli(config_path, "ingest", stdin=b"\x00\x01 nothing like a mail").code == 0
    assert run_cli(config_path, "ingest", stdin=make_mail(message_id="<ok@customer.example>")).code == 0
    listing = run_cli(config_path, "quarantine", "list")
    assert listing.code == 0 and len(listing.stdout.strip().splitlines()) == 1
    [row] = _quarantined(config_path)
    replay = run_cli(config_path, "quarantine", "reprocess", str(row["id"]))
    assert replay.code == 0 and f"#{row['id']}" in replay.stdout
    assert len(_quarantined(config_path)) == 1
    assert len(cli_json(config_path, "tickets", "list")) == 1  # the good mail is untouched
    missing = run_cli(config_path, "quarantine", "show", "999999")
    assert missing.code != 0 and "Traceback" not in missing.stderr


def test_reprocess_after_a_config_fix_turns_quarantine_into_exactly_one_ticket(make_config: MakeConfig) -> None:
    """An admin listed a colleague's address as a support address by mistake: her mail looks like our own."""
    config = make_config(intake={"addresses": ["support@example.com", "outage@example.com", "kim@example.com"]})
    raw = make_mail("VPN broken", sender="Kim <kim@example.com>", message_id="<kim-1@example.com>")
    assert run_cli(config, "ingest", stdin=raw).code == 0
    [row] = _quarantined(config)
    assert "own address" in row["reason"]
    assert cli_json(config, "tickets", "list") == []

    make_config()  # the fix: kim@example.com is a customer again
    first = run_cli(config, "quarantine", "reprocess")
    assert first.code == 0 and "accepted" in first.stdout, first.stdout
    again = run_cli(config, "quarantine", "reprocess")  # nothing left to replay: no second ticket
    assert again.code == 0
    [ticket] = cli_json(config, "tickets", "list")
    assert ticket["subject"] == "VPN broken" and ticket["requester"] == "kim@example.com"
    assert _quarantined(config) == []
    assert [r["to"] for r in cli_json(config, "outbox", "list") if r["kind"] == "ack_new"] == [["kim@example.com"]]
    assert run_cli(config, "ingest", stdin=raw).code == 0  # the MTA re-delivers it: still one ticket
    assert len(cli_json(config, "tickets", "list")) == 1


# --------------------------------------------------------------------------- outbox
def test_outbox_list_and_retry(config_path: Path) -> None:
    assert run_cli(config_path, "ingest", stdin=make_mail(message_id="<ob@customer.example>")).code == 0
    [row] = [r for r in cli_json(config_path, "outbox", "list") if r["kind"] == "ack_new"]
    queued = len(cli_json(config_path, "outbox", "list"))
    assert {"id", "kind", "to", "subject", "status", "attempts", "last_error"} <= set(row)
    assert (row["kind"], row["to"], row["status"], row["attempts"]) == ("ack_new", ["pat@customer.example"],
                                                                       "pending", 0)
    assert cli_json(config_path, "outbox", "list", "--status", "sent") == []
    text = run_cli(config_path, "outbox", "list")
    assert text.code == 0 and f"#{row['id']}" in text.stdout and "pending" in text.stdout
    retry = run_cli(config_path, "outbox", "retry", str(row["id"]))
    assert retry.code == 0 and "1 message" in retry.stdout
    assert len(cli_json(config_path, "outbox", "list")) == queued  # re-queued, not copied


# --------------------------------------------------------------------------- rules test
RESULT_KEYS = {"help_topic", "department", "priority", "sla_plan", "assignee", "team", "tags", "action"}


def _counts(config: Path) -> tuple[int, ...]:
    return tuple(sql_rows(config, f"SELECT count(*) FROM {t}")[0][0]
                 for t in ("inbound", "ticket", "message", "outbox", "attachment"))


def test_rules_test_json_prints_the_design_shape_and_stores_nothing(config_path: Path, tmp_path: Path) -> None:
    assert run_cli(config_path, "ingest", stdin=make_mail(message_id="<before@customer.example>")).code == 0
    before = _counts(config_path)
    attachments = config_path.parent.parent / "state" / "attachments"
    files_before = sorted(attachments.rglob("*")) if attachments.exists() else []
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "CFO <cfo@bigbank.example>", "support@example.com", "Wire failed"
    msg["Message-ID"] = "<dry@bigbank.example>"
    msg.set_content("Our transfer did not go through.")
    msg.add_attachment(b"statement", maintype="application", subtype="octet-stream", filename="statement.bin")
    (tmp_path / "dry.eml").write_bytes(msg.as_bytes())

    report = cli_json(config_path, "rules", "test", str(tmp_path / "dry.eml"))
    assert {"help_topic", "rules", "result", "notifications"} <= set(report)
    assert set(report["help_topic"]) == {"name", "via"}
    assert report["help_topic"]["name"] == "General"
    assert report["rules"] and all(set(r) == {"name", "matched", "reason"} for r in report["rules"])
    vip = next(r for r in report["rules"] if r["name"] == "vip-domain")
    assert vip["matched"] is True
    assert set(report["result"]) == RESULT_KEYS
    assert report["result"]["priority"] == "high" and report["result"]["assignee"] == "jane@example.com"
    assert report["result"]["action"] == "accept"
    assert all(set(n) == {"kind", "to"} for n in report["notifications"])
    assert {"kind": "ack_new", "to": ["cfo@bigbank.example"]} in report["notifications"]

    assert _counts(config_path) == before  # a dry run: nothing stored
    assert (sorted(attachments.rglob("*")) if attachments.exists() else []) == files_before
    text = run_cli(config_path, "rules", "test", str(tmp_path / "dry.eml"))
    assert text.code == 0 and "vip-domain" in text.stdout
    assert _counts(config_path) == before


def test_rules_test_shows_a_rejection_without_storing_it(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(rules=demo_rules({
        "name": "no-lottery",
        "when": {"any": [{"field": "subject", "op": "contains", "value": "lottery"}]},
        "then": {"reject": "no lottery mail"},
    }))
    (tmp_path / "spam.eml").write_bytes(make_mail("You won the lottery", message_id="<spam@x.example>"))
    report = cli_json(config, "rules", "test", str(tmp_path / "spam.eml"))
    assert report["result"]["action"] == "reject"
    assert report["notifications"] == []  # nobody hears about refused mail
    assert next(r for r in report["rules"] if r["name"] == "no-lottery")["matched"] is True
    assert sql_rows(config, "SELECT count(*) FROM inbound")[0][0] == 0


def test_reprocess_replays_in_place_and_answers_for_every_id(make_config: MakeConfig) -> None:
    config = make_config(intake={"addresses": ["support@example.com", "outage@example.com", "kim@example.com"]})
    raw = make_mail("VPN broken", sender="Kim <kim@example.com>", message_id="<kim-2@example.com>")
    assert run_cli(config, "ingest", stdin=raw).code == 0
    [row] = _quarantined(config)
    before = sql_rows(config, "SELECT count(*) FROM inbound")
    still = run_cli(config, "quarantine", "reprocess", str(row["id"]))  # nothing fixed yet: kept again
    assert still.code == 0 and still.stdout.startswith(f"#{row['id']}: quarantined"), still.stdout
    make_config()  # the fix
    replay = run_cli(config, "quarantine", "reprocess", str(row["id"]), "424242")
    assert replay.code == 1, replay.stdout  # an unknown id is an error, after the others were done
    lines = replay.stdout.splitlines()
    assert lines[0].startswith(f"#{row['id']}: accepted ticket ") and lines[1] == "#424242: no such id"
    again = run_cli(config, "quarantine", "reprocess", str(row["id"]))
    assert again.code == 0 and again.stdout.strip() == f"#{row['id']}: not quarantined (accepted)"
    assert sql_rows(config, "SELECT count(*) FROM inbound") == before  # the same record, never a new one
    record = cli_json(config, "explain", f"id:{row['id']}")
    assert record["status"] == "accepted" and record["actions"]["created"] is True
    assert [h["status"] for h in record["history"]] == ["quarantined", "quarantined"]
    assert "own address" in record["history"][0]["reason"]
    assert len(cli_json(config, "tickets", "list")) == 1
