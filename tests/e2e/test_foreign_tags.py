"""Threading with other help desks' numbers: an archive imported with ``--number-from`` keeps its
customers' threads, over the real CLI and the real listener.
"""

from __future__ import annotations

import json
import mailbox
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MakeConfig, Service, run_cli, start_service
from tests.e2e.test_agents_by_email import AGENTS, send, ticket, wait_mail

RULES = {"help_topics": [{"name": "General", "department": "Support"}], "default_help_topic": "General"}
FOREIGN = {"zammad": "[Ticket#{number}]", "rt": "[RT #{number}]"}


MAILS = [
    ("Pat <pat@customer.example>", "support@example.com", "[Ticket#10045] Printer jams", "z1@old.example",
     "Mon, 03 Mar 2025 09:00:00 +0000", "The printer jams on page 2."),
    ("Jane Doe <jane@example.com>", "pat@customer.example", "RE: [Ticket#10045] Printer jams", "z2@old.example",
     "Mon, 03 Mar 2025 11:00:00 +0000", "Please clean the roller."),
    ("Lee <lee@customer.example>", "support@example.com", "[RT #77] VPN drops", "r1@old.example",
     "Tue, 04 Mar 2025 09:00:00 +0000", "The VPN drops hourly."),
]


def archive(path: Path, system: str = "zammad") -> Path:
    """One old desk's mails as an mbox (each desk's archive is imported with its own --number-from)."""
    box = mailbox.mbox(str(path))
    for sender, to, subject, mid, date, body in MAILS:
        if ("RT #" in subject) == (system == "rt"):
            box.add(f"From: {sender}\nTo: {to}\nSubject: {subject}\nMessage-ID: <{mid}>\nDate: {date}\n\n{body}\n")
    box.close()
    return path


@pytest.fixture
def config(make_config: MakeConfig) -> Path:
    # the imported tickets were closed long ago: a reopen window of a century lets their customers reopen them
    return make_config(agents=AGENTS, rules=RULES, sla={}, tickets={"foreign_tags": FOREIGN},
                       lifecycle={"reopen_window": "36500d"})


@pytest.fixture
def imported(config: Path, tmp_path: Path) -> dict[str, str]:
    """The archive imported: foreign number -> our ticket number."""
    for system in ("zammad", "rt"):  # a desk that used both imports each archive with its own numbers
        mbox = archive(tmp_path / f"{system}.mbox", system)
        result = run_cli(config, "ingest", "--history", str(mbox), "--number-from", system)
        assert result.code == 0, result.stderr
    listed = json.loads(run_cli(config, "tickets", "list", "--json", "--all").stdout)
    assert len(listed) == 2, listed
    found = {}
    for row in listed:
        shown = ticket_by(config, row["number"])
        for alias in shown["aliases"]:
            found[f"{alias['system']}:{alias['number']}"] = row["number"]
    assert set(found) == {"zammad:10045", "rt:77"}, found
    return found


def ticket_by(config: Path, number: str) -> dict[str, Any]:
    result = run_cli(config, "tickets", "show", number, "--json")
    assert result.code == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture
def desk(config: Path, imported: dict[str, str], tmp_path: Path) -> Any:
    svc = start_service(config, tmp_path / "serve.log")
    yield svc
    svc.stop()


def explained(svc: Service, message_id: str) -> dict[str, Any]:
    result = run_cli(svc.config, "explain", message_id, "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    return dict(data[0] if isinstance(data, list) else data)


def test_import_keeps_the_old_numbers_and_a_customers_reply_threads_by_them(
    desk: Service, imported: dict[str, str]
) -> None:
    old = imported["zammad:10045"]
    shown = ticket_by(desk.config, old)
    assert [m["kind"] for m in shown["messages"]] == ["customer", "agent"]  # threaded by the tag on import
    text = run_cli(desk.config, "tickets", "show", old).stdout
    assert "also known as" in text and "zammad 10045" in text

    send(desk, "Pat <pat@customer.example>", "support@example.com", "Re: [Ticket#10045] Printer jams",
         "It jams again.", Message_ID="<again@customer.example>")
    wait_mail(desk, "jane@example.com", "It jams again.")
    record = explained(desk, "<again@customer.example>")
    assert record["thread"]["via"] == "foreign_tag" and record["thread"]["ticket"] == old, record["thread"]
    assert record["ticket"] == old
    assert [m["kind"] for m in ticket_by(desk.config, old)["messages"]] == ["customer", "agent", "customer"]

    send(desk, "Lee <lee@customer.example>", "support@example.com", "Re: [RT #77] VPN drops",
         "Still dropping.", Message_ID="<vpn@customer.example>")
    wait_mail(desk, "jane@example.com", "Still dropping.")
    assert explained(desk, "<vpn@customer.example>")["thread"]["ticket"] == imported["rt:77"]


def test_a_stranger_with_a_foreign_tag_gets_no_further_than_with_ours(desk: Service, imported: dict[str, str]) -> None:
    """The old number is as guessable as ours: it must open no door our own tag keeps shut."""
    old = imported["zammad:10045"]
    send(desk, "Mallory <mallory@evil.example>", "support@example.com", f"Re: [#{old}] Printer jams",
         "Send me the invoice.", Message_ID="<ours@evil.example>")
    send(desk, "Mallory <mallory@evil.example>", "support@example.com", "Re: [Ticket#10045] Printer jams",
         "Send me the invoice.", Message_ID="<theirs@evil.example>")
    wait_mail(desk, "mallory@evil.example", count=2)
    ours, theirs = explained(desk, "<ours@evil.example>"), explained(desk, "<theirs@evil.example>")
    assert theirs["thread"]["via"] == "foreign_tag" and ours["thread"]["via"] == "tag"
    assert {k: v for k, v in theirs["admission"].items() if k != "via"} == \
        {k: v for k, v in ours["admission"].items() if k != "via"}
    assert ours["ticket"] != old and theirs["ticket"] != old  # neither got onto the imported ticket
    people = ticket_by(desk.config, old)
    assert "mallory@evil.example" not in people["collaborators"]


def test_live_mail_never_claims_a_foreign_number(desk: Service) -> None:
    """Only an import names tickets by other desks' numbers: a new mail with an unknown one opens an
    ordinary ticket, and the next mail with that number does not thread to it by that number."""
    send(desk, "Sam <sam@customer.example>", "support@example.com", "[Ticket#99999] New thing", "First.",
         Message_ID="<n1@customer.example>")
    [ack] = wait_mail(desk, "sam@customer.example", "New thing")
    send(desk, "Sam <sam@customer.example>", "support@example.com", "[Ticket#99999] New thing", "Second.",
         Message_ID="<n2@customer.example>")
    wait_mail(desk, "sam@customer.example", "New thing", count=2)
    assert ticket(desk, ack["Subject"].split("[#")[1].split("]")[0])["aliases"] == []
    assert explained(desk, "<n2@customer.example>")["thread"]["via"] != "foreign_tag"


def test_number_from_is_checked(config: Path, tmp_path: Path) -> None:
    mbox = archive(tmp_path / "old.mbox")
    unknown = run_cli(config, "ingest", "--history", str(mbox), "--number-from", "otrs")
    assert unknown.code == 1 and "not a tag of tickets.foreign_tags (rt, zammad)" in unknown.stderr
    alone = run_cli(config, "ingest", str(mbox), "--number-from", "zammad")
    assert alone.code == 1 and "--number-from goes with --history" in alone.stderr


def test_check_config_names_a_foreign_tag_without_a_number(make_config: MakeConfig) -> None:
    config = make_config(tickets={"foreign_tags": {"zammad": "[Ticket#]"}})
    result = run_cli(config, "check-config")
    assert result.code == 1 and "mailgate.yaml:" in result.stderr and "{number}" in result.stderr, result.stderr


def test_rules_test_shows_the_foreign_tag_match(config: Path, imported: dict[str, str], tmp_path: Path) -> None:
    eml = tmp_path / "reply.eml"
    eml.write_bytes(b"From: Pat <pat@customer.example>\r\nTo: support@example.com\r\n"
                    b"Subject: Re: [Ticket#10045] Printer jams\r\n\r\nAgain.\r\n")
    result = run_cli(config, "rules", "test", str(eml), "--json")
    assert result.code == 0, result.stderr
    thread = json.loads(result.stdout)["thread"]
    assert thread["via"] == "foreign_tag" and thread["ticket"] == imported["zammad:10045"]
    text = run_cli(config, "rules", "test", str(eml)).stdout
    assert f"thread: foreign_tag -> ticket {imported['zammad:10045']}" in text


def test_a_second_ticket_with_the_same_old_number_keeps_the_first_as_its_owner(config: Path, tmp_path: Path) -> None:
    """A stranger's reply in the archive becomes a follow-up ticket (stranger_reply: new_ticket) that carries
    the same old tag: the import stores it, and the old number keeps naming the first ticket."""
    path = tmp_path / "zammad.mbox"
    box = mailbox.mbox(str(path))
    box.add("From: Pat <pat@customer.example>\nTo: support@example.com\nSubject: [Ticket#500] Printer\n"
            "Message-ID: <p1@old.example>\nDate: Mon, 03 Mar 2025 09:00:00 +0000\n\nIt jams.\n")
    box.add("From: Other <other@elsewhere.example>\nTo: support@example.com\nSubject: RE: [Ticket#500] Printer\n"
            "Message-ID: <o1@old.example>\nDate: Mon, 03 Mar 2025 10:00:00 +0000\n\nMe too.\n")
    box.close()
    result = run_cli(config, "ingest", "--history", str(path), "--number-from", "zammad")
    assert result.code == 0, result.stdout + result.stderr
    listed = json.loads(run_cli(config, "tickets", "list", "--json", "--all").stdout)
    assert len(listed) == 2, listed
    owners = [t["number"] for t in listed if ticket_by(config, t["number"])["aliases"]]
    first = next(t["number"] for t in listed if t["requester"] == "pat@customer.example")
    assert owners == [first]
    statuses = [row["status"] for row in json.loads(run_cli(config, "quarantine", "list", "--json").stdout)]
    assert statuses == []


def test_a_guessed_old_number_makes_no_stranger_a_collaborator(make_config: MakeConfig, tmp_path: Path) -> None:
    """Under stranger_reply: collaborator our own tag lets a stranger join; an old, often sequential,
    number does not: a follow-up ticket of their own."""
    config = make_config(agents=AGENTS, rules=RULES, sla={}, tickets={"foreign_tags": FOREIGN},
                         lifecycle={"reopen_window": "36500d"}, security={"stranger_reply": "collaborator"})
    result = run_cli(config, "ingest", "--history", str(archive(tmp_path / "z.mbox")), "--number-from", "zammad")
    assert result.code == 0, result.stderr
    [old] = [t["number"] for t in json.loads(run_cli(config, "tickets", "list", "--json", "--all").stdout)]
    svc = start_service(config, tmp_path / "serve.log")
    try:
        send(svc, "Mallory <mallory@evil.example>", "support@example.com", "Re: [Ticket#10045] Printer jams",
             "Send me the invoice.", Message_ID="<guess@evil.example>")
        wait_mail(svc, "mallory@evil.example")
        record = explained(svc, "<guess@evil.example>")
        assert record["thread"]["via"] == "foreign_tag" and record["ticket"] != old
        assert "mallory@evil.example" not in ticket_by(config, old)["collaborators"]
    finally:
        svc.stop()
