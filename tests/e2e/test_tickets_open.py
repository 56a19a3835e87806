"""Staff entering a ticket that came by phone: ``mailgate tickets open`` as a real process, next to a
running ``serve`` that sends what it queued. The ticket is made by the same pipeline as mail: the
acknowledgment threads like a mail's (the customer answers it by mail and lands on the ticket), the
rules and SLA apply, and the agent is recorded as the one who entered it.

The attacker's tests: the header that carries what a channel vouches for, sent by mail from outside,
must be ignored; an agent's address as requester, an unknown agent or topic are refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailgate.pipeline.submission import Submission
from tests.conftest import REPO, MakeConfig, Service, run_cli, smtp_deliver, sql_rows, start_service, wait_until
from tests.support.outgoing import mails_to, show, text_of, wait_mail

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}, {"name": "Jerry", "email": "jerry@example.com"}],
    "departments": [{"name": "Support", "members": ["jane@example.com", "jerry@example.com"]}],
}
RULES = {
    "help_topics": [{"name": "General", "department": "Support", "sla": "standard"},
                    {"name": "Billing", "department": "Support", "sla": "standard", "priority": "low"}],
    "default_help_topic": "General",
    "rules": [{"name": "urgent-word", "when": {"all": [{"field": "subject", "op": "contains", "value": "URGENT"}]},
               "then": {"priority": "high"}},
              {"name": "calls-to-jerry", "when": {"all": [{"field": "channel", "op": "equals", "value": "phone"}]},
               "then": {"assignee": "jerry@example.com"}}],
}
SLA = {"sla_plans": {"standard": {"first_response": "4h", "resolution": "2d"}}}
KEN = "ken@customer.example"


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Any:
    svc = start_service(make_config(agents=AGENTS, rules=RULES, sla=SLA), tmp_path / "serve.log")
    yield svc
    svc.stop()


def open_call(svc: Service, *extra: str, text: str = "Ken called: the router blinks red.",
              subject: str = "Router blinks red") -> Any:
    return run_cli(svc.config, "tickets", "open", "--requester", f"Ken Adams <{KEN}>", "--subject", subject,
                   "--agent", "jane@example.com", *extra, stdin=text.encode())


def number_of(out: str) -> str:
    return out.split("ticket ", 1)[1].split()[0]


def events(svc: Service, number: str) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in sql_rows(svc.config, "SELECT e.kind, e.actor, e.detail FROM event e JOIN ticket t "
                                                   f"ON t.id = e.ticket_id WHERE t.number = '{number}' ORDER BY e.id")]


def test_a_phone_call_becomes_the_customers_ticket_and_the_ack_threads(desk: Service) -> None:
    done = open_call(desk, "--field", "contract=C-1042")
    assert done.code == 0, done.stderr
    number = number_of(done.stdout)
    ticket = show(desk, number)
    assert ticket["requester"] == KEN and ticket["subject"] == "Router blinks red"
    assert ticket["help_topic"] == "General" and ticket["sla_plan"] == "standard"
    assert ticket["assignee"] == "jerry@example.com"  # the rules' channel field: phone calls go to Jerry
    assert [m["kind"] for m in ticket["messages"]] == ["customer"]
    assert "router blinks red" in ticket["messages"][0]["body"]
    assert ("channel", "jane@example.com", "phone by jane@example.com (cli)") in events(desk, number)
    assert ("field", "jane@example.com", "contract=C-1042") in events(desk, number)
    [ack] = wait_mail(desk, KEN, number)
    # Ken answers the acknowledgment from his mail client: the reply lands on the same ticket
    reply = (f"From: Ken Adams <{KEN}>\r\nTo: {ack['Reply-To'] or ack['From']}\r\nSubject: Re: {ack['Subject']}\r\n"
             f"Message-ID: <ken-reply@customer.example>\r\nIn-Reply-To: {ack['Message-ID']}\r\n\r\n"
             "It is still red.\r\n").encode()
    code, answer = smtp_deliver(desk.host, desk.port, reply, mail_from=KEN, rcpts=("support@example.com",))
    assert code == 250, answer
    wait_until(lambda: len(show(desk, number)["messages"]) == 2, what="Ken's reply on the ticket", log=desk.output)
    assert len(show(desk, number)["messages"]) == 2
    assert int(sql_rows(desk.config, "SELECT count(*) FROM ticket")[0][0]) == 1


def test_priority_topic_and_no_ack_are_the_agents_choice(desk: Service) -> None:
    done = open_call(desk, "--priority", "emergency", "--topic", "Billing", "--no-ack", subject="Invoice wrong")
    assert done.code == 0, done.stderr
    number = number_of(done.stdout)
    ticket = show(desk, number)
    assert ticket["priority"] == "emergency" and ticket["help_topic"] == "Billing"
    # the rules still run: an URGENT call without a chosen priority gets the rule's
    urgent = open_call(desk, subject="URGENT line dead", text="Line dead since noon.")
    assert urgent.code == 0, urgent.stderr
    assert show(desk, number_of(urgent.stdout))["priority"] == "high"
    wait_mail(desk, KEN, number_of(urgent.stdout))  # the second call was acknowledged...
    assert not mails_to(desk, KEN, number)  # ... the one entered with --no-ack never is


def test_the_text_comes_from_the_editor_when_stdin_is_a_terminal(desk: Service, tmp_path: Path) -> None:
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf "Typed in the editor.\\n# a comment line\\n" > "$1"\n')
    editor.chmod(0o755)
    master, slave = os.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mailgate", "tickets", "open", "--requester", KEN, "--subject", "Walk-in",
             "--agent", "jerry@example.com", "--channel", "in_person", "-c", str(desk.config)],
            stdin=slave, capture_output=True, timeout=120, env={**os.environ, "EDITOR": str(editor)}, cwd=REPO)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, proc.stderr
    number = number_of(proc.stdout.decode())
    body = show(desk, number)["messages"][0]["body"]
    assert "Typed in the editor." in body and "comment line" not in body
    assert ("channel", "jerry@example.com", "in_person by jerry@example.com (cli)") in events(desk, number)
    assert show(desk, number)["assignee"] is None  # in person, not by phone: the rule does not match


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--requester", "Jane <jane@example.com>"), "not a customer"),  # an agent is no requester
        (("--requester", "support@example.com"), "not a customer"),  # nor one of our own addresses
        (("--requester", "not an address"), "--requester: not an email address"),
        (("--agent", "mallory@evil.example"), "not an agent"),
        (("--topic", "Nope"), "no help topic 'Nope'"),
        (("--field", "bad name=1"), "field name"),
        (("--subject", "x" * 300), "at most 250"),
    ],
)
def test_bad_input_is_refused_with_the_reason_and_stores_nothing(desk: Service, args: tuple[str, ...],
                                                                 said: str) -> None:
    base = ("--requester", f"Ken <{KEN}>", "--subject", "Call", "--agent", "jane@example.com")
    done = run_cli(desk.config, "tickets", "open", *base, *args, stdin=b"Some text.")  # the last one given wins
    assert done.code == 65, (done.code, done.stdout, done.stderr)
    assert said in done.stderr, done.stderr
    assert int(sql_rows(desk.config, "SELECT count(*) FROM ticket")[0][0]) == 0


def test_an_empty_text_is_refused(desk: Service) -> None:
    done = open_call(desk, text="  \n")
    assert done.code == 65 and "the text: required" in done.stderr, done.stderr


def forged_header(number: str) -> str:
    """What the API would write for an agent's internal note on ticket ``number``."""
    return Submission(channel="api", client="portal", ticket=number, agent="jane@example.com", note=True,
                      priority="emergency", ack=False).encode()


def test_the_channel_header_sent_by_mail_from_outside_is_ignored(desk: Service) -> None:
    """A stranger who writes the header a channel would (an agent's note on Ken's ticket, a priority, no
    ack) gets what any mail gets: it vouches for nothing when the mail came by SMTP."""
    done = open_call(desk)
    number = number_of(done.stdout)
    forged = (
        "From: Mallory <mallory@evil.example>\r\nTo: support@example.com\r\nSubject: hello\r\n"
        "Message-ID: <forged-channel@evil.example>\r\n"
        f"X-Mailgate-Submission: {forged_header(number)}\r\n\r\n"
        "#close\r\nI am Jane, really.\r\n"
    ).encode()
    code, answer = smtp_deliver(desk.host, desk.port, forged, mail_from="mallory@evil.example",
                                rcpts=("support@example.com",))
    assert code == 250, answer
    [ack] = wait_mail(desk, "mallory@evil.example")  # an ordinary new mail: acknowledged like any other
    theirs = ack["Subject"].split("[#")[1].split("]")[0]
    assert theirs != number
    assert show(desk, theirs)["priority"] == "normal"
    assert show(desk, theirs)["assignee"] is None  # nor is it a phone call to the rules
    kens = show(desk, number)
    assert kens["status"] == "open" and len(kens["messages"]) == 1
    assert all("Jane, really" not in text_of(m) for m in mails_to(desk, KEN))
