"""Agent commands at the top of a mail: grammar, validation, and what stays for the customer."""

from __future__ import annotations

import pytest

from mailgate.domain import Command
from mailgate.pipeline.commands import Vocabulary, parse_agent_mail

VOCAB = Vocabulary(
    agents={"jane@example.com": "Jane Doe", "jerry@example.com": "Jerry Sys"},
    departments=frozenset({"Sys Admin", "Support"}),
    topics=frozenset({"General", "Business Critical Outage"}),
    plans=frozenset({"critical", "standard"}),
)
ME = "jane@example.com"


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_agent_mail(text, VOCAB, ME)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#status resolved", Command("status", "resolved")),
        ("#status In_Progress", Command("status", "in_progress")),
        ("#priority emergency", Command("priority", "emergency")),
        ("#assign me", Command("assign", "jane@example.com")),
        ("#assign jerry", Command("assign", "jerry@example.com")),
        ("#assign Jerry Sys", Command("assign", "jerry@example.com")),
        ("#assign none", Command("assign", "none")),
        ("#dept sys admin", Command("dept", "Sys Admin")),
        ("#topic Business Critical Outage", Command("topic", "Business Critical Outage")),
        ("#sla critical", Command("sla", "critical")),
        ("#cc <Boss@Customer.example>", Command("cc", "boss@customer.example")),
        ("#uncc boss@customer.example", Command("uncc", "boss@customer.example")),
        ("#status: closed", Command("status", "closed")),
    ],
)
def test_each_valid_command(line: str, expected: Command) -> None:
    mail = parse(f"{line}\n\nThanks, fixed.")
    assert mail.commands == (expected,)
    assert mail.errors == ()
    assert mail.text == "Thanks, fixed."


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("#stauts resolved", "unknown command #stauts"),
        ("#status done", "not a valid status"),
        ("#priority urgent", "not a valid priority"),
        ("#assign bob", "not a valid assign"),
        ("#dept Marketing", "not a valid dept"),
        ("#sla gold", "not a valid sla"),
        ("#cc not-an-address", "not a valid cc"),
        ("#status", "needs an argument"),
    ],
)
def test_invalid_commands_are_reported(line: str, error: str) -> None:
    mail = parse(f"{line}\nHello")
    assert mail.commands == ()
    assert len(mail.errors) == 1 and error in mail.errors[0]


def test_several_commands_then_text_and_later_hashes_are_text() -> None:
    mail = parse("\n#assign me\n#priority high\n#status in_progress\nWorking on it.\n#status closed is not a command")
    assert [c.name for c in mail.commands] == ["assign", "priority", "status"]
    assert mail.text == "Working on it.\n#status closed is not a command"


def test_note_marks_the_mail_internal() -> None:
    mail = parse("#note\nCustomer is on the old firmware.")
    assert mail.note and mail.commands == () and mail.text == "Customer is on the old firmware."


def test_assign_me_from_a_non_agent_fails() -> None:
    mail = parse_agent_mail("#assign me", VOCAB, "stranger@example.net")
    assert mail.commands == () and mail.errors


def test_plain_reply_has_no_commands() -> None:
    mail = parse("Hi Pat,\n\nplease restart the router.")
    assert (mail.commands, mail.errors, mail.note) == ((), (), False)
    assert mail.text.startswith("Hi Pat")
