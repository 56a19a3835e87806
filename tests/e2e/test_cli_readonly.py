"""Read-only views keep working while an admin is fixing a broken rules file (serve keeps its old rules too)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from mailgate.config import load_database_url
from tests.conftest import PATIENCE, REPO, make_mail, run_cli, sql_rows


def load_url(config: Path) -> str:
    return load_database_url(config)


def test_tickets_and_report_work_with_a_broken_rules_file(config_path: Path) -> None:
    assert run_cli(config_path, "ingest", stdin=make_mail(message_id="<ro@customer.example>")).code == 0
    rules = config_path.parent / "rules.yaml"
    rules.write_text(
        rules.read_text() + "\n  - name: broken\n    when: {all: [{field: subject, op: containz, value: x}]}\n"
    )
    assert run_cli(config_path, "check-config").code == 1
    listing = run_cli(config_path, "tickets", "list", "--json")
    assert listing.code == 0, listing.stderr  # the view reads only mailgate.yaml
    [ticket] = json.loads(listing.stdout)
    assert run_cli(config_path, "tickets", "show", ticket["number"]).code == 0
    assert json.loads(run_cli(config_path, "report", "--format", "json").stdout)[0]["tickets"] == 1


def _contents(config: Path) -> list[tuple[object, ...]]:
    tables = ["ticket", "message", "event", "inbound", "outbox", "participant", "alembic_version"]
    return [(t, *row) for t in tables for row in sql_rows(config, f"SELECT * FROM {t} ORDER BY 1")]


READ_ONLY = [
    ("tickets", "list"), ("tickets", "list", "--json"), ("outbox", "list"), ("quarantine", "list"),
    ("report",), ("sla", "due"), ("explain", "id:1"),
]


def test_read_only_commands_never_create_migrate_or_write(config_path: Path) -> None:
    missing = run_cli(config_path, "tickets", "list")
    assert missing.code == 1 and "db upgrade" in missing.stderr, missing.stderr  # SQLite: no file; PG: no tables
    assert not (config_path.parent.parent / "state" / "mailgate.db").exists() or "postgresql" in load_url(config_path)
    assert run_cli(config_path, "ingest", stdin=make_mail(message_id="<ro2@customer.example>")).code == 0
    before = _contents(config_path)
    for args in READ_ONLY:
        result = run_cli(config_path, *args)
        assert result.code == 0, (args, result.stderr)
    ticket = json.loads(run_cli(config_path, "tickets", "list", "--json").stdout)[0]["number"]
    assert run_cli(config_path, "tickets", "show", f"#{ticket}").code == 0  # as the subject tag shows it
    assert _contents(config_path) == before

    engine = sa.create_engine(load_url(config_path))
    try:
        with engine.begin() as conn:  # as if this mailgate were newer than the database
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0006'")
    finally:
        engine.dispose()  # a pooled connection left to the garbage collector warns in a later test
    behind = run_cli(config_path, "tickets", "list")
    assert behind.code == 1 and "at schema 0006" in behind.stderr and "mailgate db upgrade" in behind.stderr
    assert sql_rows(config_path, "SELECT version_num FROM alembic_version") == [("0006",)]  # not migrated


def test_listing_polish(config_path: Path) -> None:
    for n in range(3):
        assert run_cli(config_path, "ingest", stdin=make_mail(f"Case {n}", message_id=f"<p{n}@c.example>")).code == 0
    listing = run_cli(config_path, "tickets", "list").stdout.splitlines()
    assert listing[0].split() == ["NUMBER", "STATUS", "PRIORITY", "REQUESTER", "SUBJECT"] and len(listing) == 4
    as_json = json.loads(run_cli(config_path, "tickets", "list", "--json").stdout)  # the other code path
    assert [line.split()[0] for line in listing[1:]] == [t["number"] for t in as_json]
    assert len(run_cli(config_path, "tickets", "list", "--status", "open").stdout.splitlines()) == 4
    none = run_cli(config_path, "tickets", "list", "--status", "closed")
    assert none.code == 0 and none.stdout == "" and "no tickets with status closed" in none.stderr
    wrong = run_cli(config_path, "tickets", "list", "--status", "opne")
    assert wrong.code == 2 and "'awaiting_reply'" in wrong.stderr and "--help" in wrong.stderr
    bare = run_cli(config_path, "tickets")
    assert bare.code == 2 and "one of: list, show" in bare.stderr

    cut = run_cli(config_path, "outbox", "list", "--limit", "2")
    assert len(cut.stdout.splitlines()) == 2 and "showing the newest 2 of" in cut.stderr
    whole = run_cli(config_path, "outbox", "list", "--all")
    assert len(whole.stdout.splitlines()) > 2 and whole.stderr == ""

    none = run_cli(config_path, "imap", "check", "--json")
    assert none.code == 0 and json.loads(none.stdout) == []


def test_a_closed_pipe_is_no_traceback(config_path: Path) -> None:
    assert run_cli(config_path, "ingest", stdin=make_mail(message_id="<pipe@c.example>")).code == 0
    proc = subprocess.Popen([sys.executable, "-m", "mailgate", "tickets", "list", "-c", str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` that has read all it wanted
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=PATIENCE) == 141 and "Traceback" not in err, err


def test_every_command_and_argument_has_help() -> None:
    from mailgate.cli.main import _parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if a.help}
                for name, sub in action.choices.items():
                    if name not in helped:
                        missing.append(f"{path} {name}")
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(_parser(), "mailgate")
    assert missing == []


def test_read_only_commands_do_not_import_what_they_do_not_use(config_path: Path) -> None:
    assert run_cli(config_path, "ingest", stdin=make_mail(message_id="<imp@c.example>")).code == 0
    unused = {"alembic", "aiosmtpd", "imapclient", "apscheduler", "jinja2", "prometheus_client"}
    for args in [("tickets", "list"), ("outbox", "list"), ("report",), ("explain", "id:1"), ("quarantine", "list")]:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mailgate", *args, "-c", str(config_path)],
                              capture_output=True, text=True, cwd=REPO, timeout=PATIENCE)
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
                    if line.startswith("import time:") and "|" in line}
        assert imported & unused == set(), (args, imported & unused)
    version = subprocess.run([sys.executable, "-X", "importtime", "-m", "mailgate", "--version"], capture_output=True,
                             text=True, cwd=REPO, timeout=PATIENCE)
    loaded = {line.rsplit("|", 1)[1].strip() for line in version.stderr.splitlines() if "|" in line}
    assert not {"sqlalchemy", "pydantic", "mailgate.config"} & loaded


def test_tickets_list_pages_and_filters(config_path: Path, tmp_path: Path) -> None:
    import mailbox

    box = mailbox.mbox(tmp_path / "seven.mbox")
    for i in range(7):
        sender = "lee@other.example" if i % 3 == 0 else "pat@customer.example"
        box.add(make_mail(f"Case {i}", sender=sender, message_id=f"<page-{i}@customer.example>"))
    box.close()
    assert run_cli(config_path, "ingest", str(tmp_path / "seven.mbox")).code == 0

    whole = run_cli(config_path, "tickets", "list")
    assert whole.code == 0 and len(whole.stdout.splitlines()) == 8 and whole.stderr == ""  # header + 7
    first = run_cli(config_path, "tickets", "list", "--limit", "3")
    assert [line.split()[-1] for line in first.stdout.splitlines()[1:]] == ["0", "1", "2"]
    assert "showing 1-3 of 7; --offset 3" in first.stderr
    last = run_cli(config_path, "tickets", "list", "--limit", "3", "--offset", "6")
    assert [line.split()[-1] for line in last.stdout.splitlines()[1:]] == ["6"] and last.stderr == ""
    lee = run_cli(config_path, "tickets", "list", "--requester", "LEE@other.example")
    assert [line.split()[-1] for line in lee.stdout.splitlines()[1:]] == ["0", "3", "6"]
    none = run_cli(config_path, "tickets", "list", "--status", "closed", "--requester", "lee@other.example")
    assert none.code == 0 and none.stdout == "" and "no tickets with status closed, requester" in none.stderr
    paged = json.loads(run_cli(config_path, "tickets", "list", "--json", "--limit", "2", "--offset", "1").stdout)
    assert [t["subject"] for t in paged] == ["Case 1", "Case 2"]
    everything = json.loads(run_cli(config_path, "tickets", "list", "--json").stdout)
    assert len(everything) == 7  # the JSON contract: all of them unless a page is asked for
    general = json.loads(run_cli(config_path, "tickets", "list", "--json", "--topic", everything[0]["help_topic"],
                                 "--limit", "100").stdout)
    assert len(general) == sum(1 for t in everything if t["help_topic"] == everything[0]["help_topic"])
    bad = run_cli(config_path, "tickets", "list", "--limit", "-1")
    assert bad.code != 0 and "must be 0 or more" in bad.stderr
