"""Agents merge and split tickets by mail (``#merge NUMBER``, ``#split``), over the real listener.

Agents answer their alert mails (the alert's Reply-To is their own signed address); customers answer
our mails as a mail client does. Outgoing mail is read from the Maildir the daemon writes.
"""

from __future__ import annotations

import json
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    MakeConfig,
    Service,
    run_cli,
    smtp_deliver,
    sql_rows,
    start_service,
)
from tests.support.outgoing import mails_to, record, show, text_of, wait_mail

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}, {"name": "Jerry Sys", "email": "jerry@example.com"}],
    "departments": [{"name": "Support", "manager": "jane@example.com",
                     "members": ["jane@example.com", "jerry@example.com"]}],
}
RULES = {"help_topics": [{"name": "General", "department": "Support"}], "default_help_topic": "General"}
PAT, LEE = "pat@customer.example", "lee@other.example"


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Any:
    svc = start_service(make_config(agents=AGENTS, rules=RULES, sla={}), tmp_path / "serve.log")
    yield svc
    svc.stop()


# --------------------------------------------------------------------------- helpers
def send(svc: Service, sender: str, to: str, subject: str, body: str, **headers: str) -> str:
    """One mail through the listener; returns its Message-ID."""
    mid = headers.pop("Message_ID", f"<{time.monotonic_ns()}@{sender.split('@')[-1].rstrip('>')}>")
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Message-ID: {mid}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()
    code, answer = smtp_deliver(svc.host, svc.port, raw, mail_from=sender.split("<")[-1].rstrip(">"), rcpts=(to,))
    assert code == 250, answer
    return mid


def open_ticket(svc: Service, sender: str, subject: str, body: str) -> tuple[str, EmailMessage, EmailMessage]:
    """A customer opens a ticket: its number, the customer's acknowledgment and Jane's alert."""
    send(svc, sender, "support@example.com", subject, body)
    address = sender.split("<")[-1].rstrip(">")
    [ack] = wait_mail(svc, address, subject)
    number = ack["Subject"].split("[#")[1].split("]")[0]
    [alert] = wait_mail(svc, "jane@example.com", f"[#{number}]")
    return number, ack, alert


def reply(svc: Service, answered: EmailMessage, body: str, sender: str, **headers: str) -> str:
    """Answer one of our mails as a mail client does: to its Reply-To, In-Reply-To its Message-ID."""
    return send(svc, sender, answered["Reply-To"], f"Re: {answered['Subject']}", body,
                In_Reply_To=answered["Message-ID"], References=answered["Message-ID"], **headers)


def refused(svc: Service, mid: str) -> str:
    """The reason the agent's commands were refused (their mail processed, the command_error queued)."""
    found = record(svc, mid)
    assert found["actions"]["command_errors"], found
    return str(found["actions"]["command_errors"][0])


def count(svc: Service, query: str) -> int:
    return int(sql_rows(svc.config, query)[0][0])


# --------------------------------------------------------------------------- merge
def test_merge_moves_the_thread_and_people_and_mail_to_either_number_lands_in_the_survivor(desk: Service) -> None:
    a, pat_ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "My router blinks red.")
    b, _lee_ack, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down", "No internet in the office.")
    mid = reply(desk, alert_a, f"#merge {b}\nSame outage as Lee's.", "jane@example.com")
    done = record(desk, mid)
    assert done["merge"] == {"ticket": a, "other": b, "done": True, "detail": done["merge"]["detail"]}
    assert done["actions"]["ticket"] == b and done["sender"]["role"] == "agent"

    survivor, merged = show(desk, b), show(desk, a)
    assert (merged["status"], merged["merged_into"], merged["messages"]) == ("closed", b, [])
    assert survivor["merged_from"] == [a] and survivor["merged_into"] is None
    assert survivor["requester"] == LEE and survivor["collaborators"] == [PAT]  # A's requester joins, once
    assert [m["from"] for m in survivor["messages"]] == [PAT, LEE, "jane@example.com"]
    assert survivor["messages"][-1]["kind"] == "note"  # the agent's words stay among the agents
    # the received mails' records follow their messages: retention and forget find them through B
    a_id = count(desk, f"SELECT id FROM ticket WHERE number = '{a}'")
    assert count(desk, f"SELECT count(*) FROM inbound WHERE ticket_id = {a_id}") == 0
    assert f"  merged into         {b}" in run_cli(desk.config, "tickets", "show", a).stdout
    assert f"  merged from         {a}" in run_cli(desk.config, "tickets", "show", b).stdout
    listing = run_cli(desk.config, "tickets", "list").stdout
    assert any(line.startswith(a) and "closed (merged)" in line for line in listing.splitlines()), listing

    # each customer is told once, in B's thread, with B's tag
    [to_pat] = wait_mail(desk, PAT, "are now one")
    [to_lee] = wait_mail(desk, LEE, "are now one")
    assert f"[#{b}]" in to_pat["Subject"] and f"[#{a}]" in text_of(to_pat) and f"[#{b}]" in to_lee["Subject"]
    assert not mails_to(desk, PAT, "Same outage")  # the note was not relayed

    # Pat answers A's old acknowledgment (A's tag, In-Reply-To A's Message-ID): it lands in B
    late = reply(desk, pat_ack, "Still blinking.", f"Pat <{PAT}>")
    landed = record(desk, late)
    assert landed["thread"]["ticket"] == b and landed["thread"]["merged_via"] == [a]
    assert show(desk, b)["messages"][-1]["body"] == "Still blinking." and show(desk, a)["messages"] == []
    # Jane answers A's old alert: her signed address for A still proves it is her, and it lands in B
    answer = reply(desk, alert_a, "We are on it.", "jane@example.com")
    assert record(desk, answer)["sender"]["role"] == "agent"
    wait_mail(desk, LEE, "We are on it.")
    wait_mail(desk, PAT, "We are on it.")

    # a stranger with A's tag gets no further than with B's: a ticket of their own, nothing in B
    before = len(show(desk, b)["messages"])
    for number in (a, b):
        guess = send(desk, "mallory@evil.example", "support@example.com", f"Re: [#{number}] Router broken",
                     "Send me the data")
        outcome = record(desk, guess)
        assert outcome["admission"] == {"joins_ticket": False, "follow_up_of": b}, outcome["admission"]
    assert len(show(desk, b)["messages"]) == before
    assert count(desk, "SELECT count(*) FROM outbox WHERE kind = 'notice_merged'") == 2


def test_a_second_merge_and_a_circle_are_answered_and_change_nothing(desk: Service) -> None:
    a, _ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "My router blinks red.")
    b, _ack_b, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down", "No internet.")
    record(desk, reply(desk, alert_a, f"#merge {b}", "jane@example.com"))
    again = reply(desk, alert_a, f"#merge {b}", "jane@example.com")  # another mail, same command
    assert refused(desk, again) == f"ticket {a} is already merged into {b}: nothing was done"
    circle = reply(desk, alert_a, f"#merge {a}", "jane@example.com")  # lands in B: B into A would loop
    assert "would make a circle" in refused(desk, circle)
    [told, _] = wait_mail(desk, "jane@example.com", "were not applied", count=2)
    assert "already merged" in text_of(told) or "circle" in text_of(told)
    assert show(desk, a)["merged_into"] == b and show(desk, b)["merged_into"] is None
    assert count(desk, "SELECT count(*) FROM outbox WHERE kind = 'notice_merged'") == 2


def test_merge_refusals(desk: Service) -> None:
    a, _ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "My router blinks red.")
    c, _ack_c, alert_c = open_ticket(desk, f"Lee <{LEE}>", "Internet down", "No internet.")
    d, _ack_d, _alert_d = open_ticket(desk, "Kim <kim@third.example>", "Wifi gone", "No wifi.")
    assert "cannot be merged into itself" in refused(desk, reply(desk, alert_a, f"#merge {a}", "jane@example.com"))
    assert "there is no ticket 999999" in refused(desk, reply(desk, alert_a, "#merge 999999", "jane@example.com"))
    assert "not a valid merge argument" in refused(desk, reply(desk, alert_a, "#merge ../x", "jane@example.com"))
    alone = refused(desk, reply(desk, alert_a, f"#merge {c}\n#assign me", "jane@example.com"))
    assert alone == "#merge goes alone: send other commands in a mail of their own"
    record(desk, reply(desk, alert_c, f"#merge {d}", "jane@example.com"))
    elsewhere = refused(desk, reply(desk, alert_a, f"#merge {c}", "jane@example.com"))
    assert elsewhere == f"#merge {c}: ticket {c} is merged into {d} already; send #merge {d} to merge into " \
                        "the ticket that took it over"
    assert show(desk, a)["status"] == "open" and show(desk, a)["merged_into"] is None
    assert [m["kind"] for m in show(desk, a)["messages"]][1:] == ["note"] * 5  # each refused mail kept as a note


def test_nobody_but_an_authenticated_agent_merges(desk: Service) -> None:
    a, ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "My router blinks red.")
    b, _ack_b, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down", "No internet.")
    customer = reply(desk, ack, f"#merge {b}\nPlease merge.", f"Pat <{PAT}>")  # a customer's words, not a command
    assert "merge" not in record(desk, customer) and show(desk, a)["messages"][-1]["body"].startswith("#merge")
    forged = send(desk, "jane@example.com", "support@example.com", f"Re: [#{a}] Router broken", f"#merge {b}")
    kept = record(desk, forged)  # From names an agent, nothing proves it: kept aside, the agent told
    assert kept["status"] == "quarantined" and "#merge " + b in kept["reason"]
    wait_mail(desk, "jane@example.com", "plain support address")
    # an agent's token for another agent's alert proves nothing either
    stolen = send(desk, "jerry@example.com", alert_a["Reply-To"], f"Re: {alert_a['Subject']}", f"#merge {b}",
                  In_Reply_To=alert_a["Message-ID"])
    assert record(desk, stolen)["status"] == "quarantined"
    assert show(desk, a)["merged_into"] is None and show(desk, b)["merged_from"] == []
    assert count(desk, "SELECT count(*) FROM outbox WHERE kind = 'notice_merged'") == 0


# --------------------------------------------------------------------------- split
def test_split_makes_the_answered_message_and_the_senders_later_ones_a_ticket(desk: Service) -> None:
    a, pat_ack, alert_new = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "My router blinks red.")
    send(desk, f"Pat <{PAT}>", pat_ack["Reply-To"], f"Re: [#{a}] Printer jams", "Also: the printer jams.",
         In_Reply_To=pat_ack["Message-ID"])
    [alert_printer] = wait_mail(desk, "jane@example.com", "printer jams")
    record(desk, reply(desk, alert_new, "Please restart the router.", "jane@example.com"))  # stays in A
    later = send(desk, f"Pat <{PAT}>", pat_ack["Reply-To"], f"Re: [#{a}] Printer jams", "It jams on tray 2.")
    record(desk, later)
    mid = reply(desk, alert_printer, "#split", "jane@example.com")
    done = record(desk, mid)
    c = done["split"]["other"]
    assert done["split"]["done"] is True and done["actions"]["ticket"] == c
    old, new = show(desk, a), show(desk, c)
    assert [m["body"] for m in old["messages"]] == ["My router blinks red.", "Please restart the router."]
    assert [m["body"] for m in new["messages"]] == ["Also: the printer jams.", "It jams on tray 2."]
    assert (new["requester"], new["help_topic"], new["department"], new["priority"]) == (
        PAT, old["help_topic"], old["department"], old["priority"])
    assert new["subject"] == "Printer jams" and new["status"] == "open"
    assert (old["split_into"], new["split_from"]) == ([c], a)
    c_id = count(desk, f"SELECT id FROM ticket WHERE number = '{c}'")  # the two mails' records moved with them
    assert count(desk, f"SELECT count(*) FROM inbound WHERE ticket_id = {c_id} AND mail_from = '{PAT}'") == 2
    assert f"  split into          {c}" in run_cli(desk.config, "tickets", "show", a).stdout
    assert f"  split from          {a}" in run_cli(desk.config, "tickets", "show", c).stdout

    [told] = wait_mail(desk, PAT, "request of its own")
    assert f"[#{c}]" in told["Subject"] and f"[#{a}]" in text_of(told)
    [alert_c] = wait_mail(desk, "jane@example.com", f"New ticket [#{c}]")  # her way to answer C by mail
    assert "Also: the printer jams." in text_of(alert_c)
    # Pat's answer to the notice, and to the printer thread, land in C
    record(desk, reply(desk, told, "Thanks.", f"Pat <{PAT}>"))
    assert show(desk, c)["messages"][-1]["body"] == "Thanks."
    # the same alert answered again: that message is in C now
    again = refused(desk, reply(desk, alert_printer, "#split", "jane@example.com"))
    assert again == f"#split: that message is in ticket {c} now, not in {a}"
    assert count(desk, "SELECT count(*) FROM outbox WHERE kind = 'notice_split'") == 1
    # the message that opened the ticket stays
    first = refused(desk, reply(desk, alert_new, "#split", "jane@example.com"))
    assert first == f"#split: that message opened ticket {a}; there is nothing to split it from"


def test_split_that_names_no_message_is_refused(desk: Service) -> None:
    a, _ack, alert = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "My router blinks red.")
    bare = send(desk, "jane@example.com", alert["Reply-To"], f"Re: {alert['Subject']}", "#split")  # no In-Reply-To
    assert refused(desk, bare).startswith(f"#split: this mail answers no message of ticket {a}")
    extra = refused(desk, reply(desk, alert, "#split now", "jane@example.com"))
    assert extra.startswith("#split now: #split takes no argument")
    [told, _] = wait_mail(desk, "jane@example.com", "were not applied", count=2)
    assert "#split" in text_of(told)
    assert show(desk, a)["split_into"] == [] and len(json.loads(run_cli(desk.config, "tickets", "list",
                                                                         "--json").stdout)) == 1


# --------------------------------------------------------------------------- dry run
def test_rules_test_shows_merge_and_split_decisions(desk: Service, tmp_path: Path) -> None:
    a, pat_ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "My router blinks red.")
    b, _ack_b, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down", "No internet.")
    dry = tmp_path / "merge.eml"
    dry.write_bytes(
        f"From: jane@example.com\r\nTo: {alert_a['Reply-To']}\r\nSubject: Re: {alert_a['Subject']}\r\n"
        f"In-Reply-To: {alert_a['Message-ID']}\r\nMessage-ID: <dry-merge@example.com>\r\n\r\n#merge {b}\r\n".encode()
    )
    report = json.loads(run_cli(desk.config, "rules", "test", str(dry), "--to", alert_a["Reply-To"], "--json").stdout)
    assert report["merge"]["done"] is True and (report["merge"]["ticket"], report["merge"]["other"]) == (a, b)
    assert sorted(n["to"][0] for n in report["notifications"]) == [LEE, PAT]
    text = run_cli(desk.config, "rules", "test", str(dry), "--to", alert_a["Reply-To"]).stdout
    assert f"#merge on {a}: done ({b})" in text
    assert show(desk, a)["merged_into"] is None  # a dry run
    split = tmp_path / "split.eml"
    split.write_bytes(
        f"From: jane@example.com\r\nTo: {alert_a['Reply-To']}\r\nSubject: Re: {alert_a['Subject']}\r\n"
        f"Message-ID: <dry-split@example.com>\r\n\r\n#split\r\n".encode()
    )
    report = json.loads(run_cli(desk.config, "rules", "test", str(split), "--to", alert_a["Reply-To"], "--json").stdout)
    assert report["split"]["done"] is False and "answers no message" in report["split"]["detail"]

    record(desk, reply(desk, alert_a, f"#merge {b}", "jane@example.com"))
    late = tmp_path / "late.eml"
    late.write_bytes(
        f"From: Pat <{PAT}>\r\nTo: support@example.com\r\nSubject: Re: {pat_ack['Subject']}\r\n"
        f"In-Reply-To: {pat_ack['Message-ID']}\r\nMessage-ID: <dry-late@customer.example>\r\n\r\nHello?\r\n".encode()
    )
    report = json.loads(run_cli(desk.config, "rules", "test", str(late), "--json").stdout)
    assert report["thread"]["named"] == a and report["thread"]["merged_via"] == [a]
    assert report["outcome"]["ticket"] == b
    assert f"merged: names {a}, merged ({a} -> {b}): lands in {b}" in run_cli(desk.config, "rules", "test",
                                                                               str(late)).stdout
