"""Where two features of "What other help desks ask for" meet, over the real SMTP listener and the real CLI.

Each feature has its own tests (tests/e2e/); these are the combinations, most of them the attacker's:
a stranger's forward carrying command lines, a status request naming a victim's ticket, ``#close`` on
a merged ticket, a merge across reply addresses, flood control against agents and status requests,
spam verdicts on commands, two releases of one held mail at once, ``forget`` after merge/split/import/
forward, foreign tags under the collaborator policy, and replays of commands and forwards.

One desk has every feature on (see ``MAIN``). The test client connects from 127.0.0.1, which is a
trusted relay here, so a spam verdict the test writes on top of a mail is believed; agents prove who
they are with our MX's ``Authentication-Results`` (authserv-id mx.example.com) or their signed
address. Each test's docstring states the safe behaviour it holds the product to.
"""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    PATIENCE,
    REPO,
    MakeConfig,
    Service,
    cli_json,
    run_cli,
    smtp_deliver,
    sql_rows,
    start_service,
    wait_until,
)
from tests.support.dbdump import dump
from tests.support.outgoing import mails_to, show, text_of, wait_mail

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}, {"name": "Jerry Sys", "email": "jerry@example.com"}],
    "departments": [{"name": "Support", "manager": "jane@example.com",
                     "members": ["jane@example.com", "jerry@example.com"]}],
}
RULES = {
    "help_topics": [
        {"name": "General", "department": "Support"},
        {"name": "Billing", "department": "Support", "from_name": "Example Billing",
         "recognise": {"addresses": ["billing@example.com"]}},
    ],
    "default_help_topic": "General",
}
STATUS = "status@example.com"
MAIN: dict[str, Any] = {
    "admin_email": "it@example.com",
    "intake": {
        "addresses": ["support@example.com", "billing@example.com"],
        "status_address": STATUS,
        "status_answers": {"count": 10, "within": "1h"},
        "spam": {"trusted_relays": ["127.0.0.1"]},
        "flood": {"per_sender": "3/10m", "per_domain": "50/10m"},
    },
    "tickets": {"customer_close": {"enabled": True, "words": ["#close"]},
                "foreign_tags": {"zammad": "[Ticket#{number}]"}},
    "security": {"agent_authentication": {"authserv_ids": ["mx.example.com"]}},
    "lifecycle": {"reopen_window": "36500d"},  # imported history is old: let it be reopened like any ticket
}
PAT, LEE, KIM = "pat@customer.example", "lee@other.example", "kim@customer.example"
MALLORY = "mallory@evil.example"
VOUCHED = "mx.example.com; dkim=pass header.d=example.com"  # our MX: the agent's domain signed it
SPAM = "X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=9.3 required=5.0 tests=BAYES_99\r\n"


# --------------------------------------------------------------------------- the desk
DeskFactory = Callable[..., Service]


@pytest.fixture
def make_desk(make_config: MakeConfig, tmp_path: Path) -> Iterator[DeskFactory]:
    """Start the all-features desk (``main`` deep-merged into MAIN); ``prepare(config)`` runs before serve."""
    started: list[Service] = []

    def make(prepare: Callable[[Path], None] | None = None, **main: Any) -> Service:
        merged = json.loads(json.dumps(MAIN))
        for key, value in main.items():
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
        config = make_config(agents=AGENTS, rules=RULES, sla={}, **merged)
        if prepare is not None:
            prepare(config)
        svc = start_service(config, tmp_path / "serve.log")
        started.append(svc)
        return svc

    yield make
    for svc in started:
        if svc.proc.poll() is None:
            svc.stop()


@pytest.fixture
def desk(make_desk: DeskFactory) -> Service:
    return make_desk()


# --------------------------------------------------------------------------- helpers
def raw_mail(sender: str, to: str, subject: str, body: str, *, auth: str | None = None, top: str = "",
             **headers: str) -> tuple[str, bytes]:
    """(Message-ID, bytes) of one mail; ``auth`` is our MX's Authentication-Results, ``top`` a relay's fields."""
    mid = headers.pop("Message_ID", f"<{time.monotonic_ns()}@{sender.split('@')[-1].rstrip('>')}>")
    lines = [f"Authentication-Results: {auth}"] if auth else []
    lines += [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Message-ID: {mid}",
              "Date: Tue, 24 Nov 2026 09:00:00 +0100", "MIME-Version: 1.0"]
    if "Content_Type" not in headers:
        lines += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return mid, (top + "\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


def send(svc: Service, sender: str, to: str, subject: str, body: str, **kw: str) -> str:
    """One mail through the listener; returns its Message-ID."""
    mid, raw = raw_mail(sender, to, subject, body, **kw)
    code, answer = smtp_deliver(svc.host, svc.port, raw, mail_from=sender.split("<")[-1].rstrip(">"), rcpts=(to,))
    assert code == 250, answer
    return mid


def reply(svc: Service, answered: EmailMessage, body: str, sender: str, **kw: str) -> str:
    """Answer one of our mails as a mail client does: to its Reply-To, In-Reply-To its Message-ID."""
    return send(svc, sender, kw.pop("to", answered["Reply-To"]), f"Re: {answered['Subject']}", body,
                In_Reply_To=answered["Message-ID"], References=answered["Message-ID"], **kw)


def forward_body(above: str, customer: str = f"Pat <{PAT}>", subject: str = "Printer broken",
                 when: str = "Mon, Nov 23, 2026 at 10:05 AM", text: str = "The printer is broken.") -> str:
    """An inline Gmail forward of a customer's mail, with the agent's own lines above it."""
    return (f"{above}\n---------- Forwarded message ---------\nFrom: {customer}\nDate: {when}\n"
            f"Subject: {subject}\nTo: <jane@example.com>\n\n{text}\n")


def inbound_id(svc: Service, mid: str) -> int:
    def done() -> int | None:
        rows = sql_rows(svc.config, "SELECT id, message_id FROM inbound WHERE processed_at IS NOT NULL ORDER BY id")
        return next((row_id for row_id, found in rows if found == mid), None)

    return int(wait_until(done, what=f"mail {mid} processed", log=svc.output))


def record(svc: Service, mid: str) -> dict[str, Any]:
    """The explain record of a received mail, once it is processed."""
    found = cli_json(svc.config, "explain", f"id:{inbound_id(svc, mid)}")
    return dict(found[0] if isinstance(found, list) else found)


def tag_of(mail: EmailMessage) -> str:
    return str(mail["Subject"]).split("[#")[1].split("]")[0]


def open_ticket(svc: Service, sender: str, subject: str, body: str = "It is broken.",
                to: str = "support@example.com") -> tuple[str, EmailMessage, EmailMessage]:
    """A customer opens a ticket: its number, the customer's acknowledgment and Jane's alert."""
    send(svc, sender, to, subject, body)
    [ack] = wait_mail(svc, sender.split("<")[-1].rstrip(">"), subject)
    number = tag_of(ack)
    [alert] = wait_mail(svc, "jane@example.com", f"[#{number}]")
    return number, ack, alert


def merge(svc: Service, alert: EmailMessage, into: str, **kw: str) -> str:
    """Jane answers A's alert with ``#merge B``; waits until it is processed."""
    mid = reply(svc, alert, f"#merge {into}", "jane@example.com", **kw)
    inbound_id(svc, mid)
    return mid


def outbox(svc: Service, kind: str) -> list[str]:
    """Recipients of the outbox rows of one kind, oldest first."""
    return [r for (r,) in sql_rows(svc.config, f"SELECT recipient FROM outbox WHERE kind = '{kind}' ORDER BY id")]


def tickets(svc: Service) -> list[dict[str, Any]]:
    return list(json.loads(run_cli(svc.config, "tickets", "list", "--json", "--all").stdout))


def settled(svc: Service) -> None:
    """Every stored mail processed (a mail answered 250 is stored already, so none is missed)."""
    wait_until(lambda: sql_rows(svc.config, "SELECT count(*) FROM inbound WHERE processed_at IS NULL") == [(0,)],
               what="all mail processed", log=svc.output)


def drained(svc: Service) -> None:
    wait_until(lambda: not sql_rows(svc.config, "SELECT id FROM outbox WHERE status IN ('pending', 'sending')"),
               what="outbox drained", log=svc.output)


def pat_traces(text: str) -> list[str]:
    return [line[:300] for line in text.splitlines() if "pat@customer.example" in line.lower()]


def zammad_archive(path: Path, *numbers: int) -> Callable[[Path], None]:
    """A ``prepare`` that imports Pat's old Zammad tickets with their numbers (``--number-from zammad``)."""
    def prepare(config: Path) -> None:
        box = mailbox.mbox(str(path))
        for n in numbers:
            box.add(f"From: Pat <{PAT}>\nTo: support@example.com\nSubject: [Ticket#{n}] Old matter {n}\n"
                    f"Message-ID: <z{n}@old.example>\nDate: Mon, 03 Mar 2025 09:00:00 +0000\n\nOld words {n}.\n")
        box.close()
        done = run_cli(config, "ingest", "--history", str(path), "--number-from", "zammad")
        assert done.code == 0, done.stderr

    return prepare


def by_alias(svc: Service, number: int) -> str:
    for row in tickets(svc):
        if any(a["number"] == str(number) for a in show(svc, row["number"])["aliases"]):
            return str(row["number"])
    raise AssertionError(f"no ticket known as zammad {number}")


# --------------------------------------------------------------------------- strangers and commands
def test_a_strangers_forward_carrying_close_and_merge_lines_changes_nothing(desk: Service) -> None:
    """A stranger's "forward" with ``#close``/``#merge`` lines (above and inside the block) and the victim's tag
    is the stranger's own mail: the victim's ticket stays open and unmerged, the stranger joins nothing,
    and no mail to the stranger carries the victim's words. The same body under a forged agent From
    (no authentication) is kept aside: nothing changes either."""
    a, _ack, _alert = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "My router blinks red, serial 4711.")
    b, _ack_b, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down")
    body = forward_body(f"#close\n#merge {b}\n#ack", subject=f"Re: [#{a}] Router broken", text="#close")
    stranger = record(desk, send(desk, f"Mallory <{MALLORY}>", "support@example.com",
                                 f"Fwd: Re: [#{a}] Router broken", body, auth=VOUCHED.replace("example.com",
                                                                                               "evil.example")))
    assert "forwarded" not in stranger and stranger["sender"]["address"] == MALLORY
    assert stranger.get("merge") is None and not (stranger.get("customer_close") or {}).get("acts")
    assert stranger["ticket"] != a
    forged = record(desk, send(desk, "Jane Doe <jane@example.com>", "support@example.com",
                               f"Fwd: Re: [#{a}] Router broken", body))
    assert forged["status"] == "quarantined" and forged["ticket"] is None
    for number in (a, b):
        ticket = show(desk, number)
        assert ticket["status"] == "open" and ticket["merged_into"] is None and ticket["merged_from"] == []
        assert MALLORY not in ticket["collaborators"] and len(ticket["messages"]) == 1
    drained(desk)
    assert all("4711" not in text_of(m) and PAT not in text_of(m) for m in mails_to(desk, MALLORY))
    assert outbox(desk, "notice_merged") == [] and outbox(desk, "notice_closed") == []


def test_status_address_with_a_victims_tag_and_reply_to_the_stranger_leaks_nothing(desk: Service) -> None:
    """status@ with the victim's tag in the subject: a stranger's own From is not answered (never opened a
    ticket); From forged as the victim with Reply-To the stranger is answered to the victim only. The
    victim's genuine ``#close`` sent to status@ (with proof) still joins no ticket, so closes nothing."""
    a, ack, _alert = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "Serial 4711.")
    own = record(desk, send(desk, f"Mallory <{MALLORY}>", STATUS, f"Re: [#{a}] Router broken", "status?",
                            Reply_To=MALLORY))
    assert own["ticket"] is None and own["status_request"]["answered"] is False
    forged = record(desk, send(desk, f"Pat <{PAT}>", STATUS, f"Re: [#{a}] Router broken", "status?",
                               Reply_To=f"Mallory <{MALLORY}>"))
    assert forged["ticket"] is None and forged["status_request"]["to"] == PAT
    foreign = record(desk, send(desk, f"Mallory <{MALLORY}>", STATUS, "Re: [Ticket#10045] Router broken", "?"))
    assert foreign["ticket"] is None and foreign["status_request"]["answered"] is False
    closing = record(desk, reply(desk, ack, "#close", f"Pat <{PAT}>", to=STATUS))
    assert closing["ticket"] is None and not (closing.get("customer_close") or {}).get("acts")
    drained(desk)
    assert mails_to(desk, MALLORY) == [] and set(outbox(desk, "status_list")) == {PAT}
    ticket = show(desk, a)
    assert ticket["status"] == "open" and len(ticket["messages"]) == 1 and MALLORY not in ticket["collaborators"]


def test_close_on_the_old_tickets_ack_after_a_merge_never_closes_the_survivor(desk: Service) -> None:
    """Pat's ticket A is merged into Kim's B (Kim and Pat share a domain, customer.example). Pat answers A's
    acknowledgment, and later the merge notice, with ``#close``, and our MX passes DKIM for customer.example,
    B's requester's domain too: the replies land in B, where Pat is only a collaborator, so B stays open
    (only B's requester closes B). A stranger's ``#close`` with A's tag changes nothing. Kim's own
    ``#close`` does close B."""
    domain_passes = "mx.example.com; dkim=pass header.d=customer.example"
    a, pat_ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    b, kim_ack, _alert_b = open_ticket(desk, f"Kim <{KIM}>", "Internet down")
    merge(desk, alert_a, b)
    late = record(desk, reply(desk, pat_ack, "Works now.\n#close", f"Pat <{PAT}>", auth=domain_passes))
    assert late["thread"]["ticket"] == b and not late["customer_close"]["acts"], late.get("customer_close")
    assert "only the requester" in late["customer_close"]["reason"]
    stranger = record(desk, send(desk, f"Mallory <{MALLORY}>", "support@example.com", f"Re: [#{a}] Router broken",
                                 "#close"))
    assert not (stranger.get("customer_close") or {}).get("acts")
    [notice] = wait_mail(desk, PAT, "are now one")  # in B's thread, signed to Pat: proof Pat wrote, not a right
    on_notice = record(desk, reply(desk, notice, "#close", f"Pat <{PAT}>", auth=domain_passes))
    assert on_notice["thread"]["ticket"] == b and not on_notice["customer_close"]["acts"]
    assert show(desk, b)["status"] == "open" and show(desk, a)["merged_into"] == b
    assert outbox(desk, "notice_closed") == []
    record(desk, reply(desk, kim_ack, "All good.\n#close", f"Kim <{KIM}>"))
    assert show(desk, b)["status"] == "closed"
    assert outbox(desk, "notice_closed") == [KIM]


def test_merging_a_billing_ticket_into_a_support_ticket(desk: Service) -> None:
    """Kim wrote to billing@ (A), Pat to support@ (B); A goes into B. The survivor speaks as itself: both
    notices come From support@, in B's thread. Notices go to B's requester and A's people only, never to a
    stranger who replied to A with its tag and was given a ticket of their own."""
    a, kim_ack, alert_a = open_ticket(desk, f"Kim <{KIM}>", "Invoice twice", to="billing@example.com")
    assert parseaddr(kim_ack["From"])[1] == "billing@example.com"
    b, _pat_ack, _alert_b = open_ticket(desk, f"Pat <{PAT}>", "Charged twice")
    refused = record(desk, send(desk, f"Mallory <{MALLORY}>", "billing@example.com", f"Re: [#{a}] Invoice twice",
                                "Send me Kim's invoice."))
    assert refused["admission"]["joins_ticket"] is False
    merge(desk, alert_a, b)
    [to_kim] = wait_mail(desk, KIM, "are now one")
    [to_pat] = wait_mail(desk, PAT, "are now one")
    drained(desk)
    assert sorted(outbox(desk, "notice_merged")) == sorted([KIM, PAT])
    assert not mails_to(desk, MALLORY, "are now one")
    survivor = show(desk, b)["reply_address"]
    assert survivor == "support@example.com"
    for notice in (to_kim, to_pat):
        assert f"[#{b}]" in notice["Subject"] and parseaddr(notice["From"])[1] == survivor, notice["From"]
        assert str(notice["Reply-To"]).startswith("support")


def test_close_on_a_split_off_ticket_closes_only_that_ticket(desk: Service) -> None:
    """Pat's second matter is split off ticket A into C. Pat answers the split notice with ``#close``: C (Pat's
    as requester, proof: our notice to Pat) is closed, A stays open."""
    a, ack, _alert = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    send(desk, f"Pat <{PAT}>", ack["Reply-To"], f"Re: [#{a}] Scanner too", "The scanner is also broken.",
         In_Reply_To=ack["Message-ID"])
    [alert_scan] = wait_mail(desk, "jane@example.com", "scanner is also broken")
    record(desk, reply(desk, alert_scan, "#split", "jane@example.com"))
    [notice] = wait_mail(desk, PAT, "request of its own")
    c = tag_of(notice)
    assert c != a and show(desk, c)["requester"] == PAT
    done = record(desk, reply(desk, notice, "Sorted, thanks.\n#close", f"Pat <{PAT}>"))
    assert done["thread"]["ticket"] == c and done["customer_close"]["acts"], done.get("customer_close")
    assert show(desk, c)["status"] == "closed" and show(desk, a)["status"] == "open"


def test_a_split_off_billing_message_speaks_from_billing(desk: Service) -> None:
    """Kim wrote to billing@ (A); Jane splits Kim's second message off into C. C is the same customer's matter
    in the same topic: the split notice and C's mail come From billing@, never from another address."""
    a, ack, _alert = open_ticket(desk, f"Kim <{KIM}>", "Invoice twice", to="billing@example.com")
    send(desk, f"Kim <{KIM}>", ack["Reply-To"], f"Re: [#{a}] Refund", "And where is my refund?",
         In_Reply_To=ack["Message-ID"])
    [alert_refund] = wait_mail(desk, "jane@example.com", "where is my refund")
    record(desk, reply(desk, alert_refund, "#split", "jane@example.com"))
    [notice] = wait_mail(desk, KIM, "request of its own")
    c = tag_of(notice)
    assert show(desk, c)["reply_address"] == "billing@example.com"
    assert parseaddr(notice["From"]) == ("Example Billing", "billing@example.com")
    assert str(notice["Reply-To"]).startswith("billing")


def test_an_imported_archive_never_acts_answers_or_counts(make_desk: DeskFactory, tmp_path: Path) -> None:
    """``ingest --history --number-from`` of an old archive while the desk runs: an agent's ``#merge`` and
    ``#status closed`` lines in it are history, not commands (the live ticket B is untouched); a mail to
    status@ in it is not answered; a requester's ``#close`` changes nothing live; and Pat's four old
    tickets do not count towards flood control (per_sender 3/10m), so Pat's new live mail opens a ticket."""
    desk = make_desk()
    b, _lee_ack, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down")
    box = mailbox.mbox(str(tmp_path / "old.mbox"))
    for n in range(4):
        box.add(f"From: Pat <{PAT}>\nTo: support@example.com\nSubject: [Ticket#{500 + n}] Old {n}\n"
                f"Message-ID: <h{n}@old.example>\nDate: Mon, 03 Mar 2025 09:0{n}:00 +0000\n\nOld words {n}.\n")
    box.add(f"From: Jane Doe <jane@example.com>\nTo: {PAT}\nSubject: RE: [Ticket#500] Old 0\n"
            f"Message-ID: <h9@old.example>\nIn-Reply-To: <h0@old.example>\nDate: Mon, 03 Mar 2025 10:00:00 +0000\n"
            f"\n#merge {b}\n#status closed\nDone.\n")
    box.add(f"From: Pat <{PAT}>\nTo: {STATUS}\nSubject: status?\nMessage-ID: <h10@old.example>\n"
            "Date: Mon, 03 Mar 2025 11:00:00 +0000\n\n?\n")
    box.add(f"From: Pat <{PAT}>\nTo: support@example.com\nSubject: Re: [Ticket#501] Old 1\n"
            "Message-ID: <h11@old.example>\nDate: Mon, 03 Mar 2025 12:00:00 +0000\n\n#close\n")
    box.close()
    done = run_cli(desk.config, "ingest", "--history", str(tmp_path / "old.mbox"), "--number-from", "zammad")
    assert done.code == 0, done.stderr
    survivor = show(desk, b)
    assert survivor["status"] == "open" and survivor["merged_from"] == [] and len(survivor["messages"]) == 1
    assert outbox(desk, "status_list") == [] and outbox(desk, "notice_merged") == []
    assert outbox(desk, "command_error") == [] and outbox(desk, "notice_closed") == []
    live = record(desk, send(desk, f"Pat <{PAT}>", "support@example.com", "Something new", "Hi."))
    assert live["status"] == "accepted" and live["ticket"] is not None, live.get("reason")


def test_close_with_a_foreign_tag_needs_proof_like_ours(make_desk: DeskFactory, tmp_path: Path) -> None:
    """Pat's imported (closed) Zammad ticket 10045. ``#close`` with only the old tag proves nothing: ignored,
    the mail is the reply it would have been. With proof (our MX passes DKIM for Pat's domain) it acts as
    on any closed ticket: kept there, nothing reopened, no follow-up ticket, no confirmation."""
    desk = make_desk(prepare=zammad_archive(tmp_path / "zammad.mbox", 10045, 10046))
    proven_t, plain_t = by_alias(desk, 10045), by_alias(desk, 10046)
    proven = record(desk, send(desk, f"Pat <{PAT}>", "support@example.com", "Re: [Ticket#10045] Old matter 10045",
                               "#close", auth="mx.example.com; dkim=pass header.d=customer.example"))
    assert proven["thread"]["via"] == "foreign_tag" and proven["customer_close"]["acts"], proven["customer_close"]
    assert proven["ticket"] == proven_t and show(desk, proven_t)["status"] == "closed"
    plain = record(desk, send(desk, f"Pat <{PAT}>", "support@example.com", "Re: [Ticket#10046] Old matter 10046",
                              "#close"))
    assert not plain["customer_close"]["acts"] and "nothing proves" in plain["customer_close"]["reason"]
    assert plain["ticket"] == plain_t  # the reply it would have been: it reopens the old ticket (reopen window)
    drained(desk)
    assert len(tickets(desk)) == 2 and outbox(desk, "notice_closed") == []


def test_a_requester_at_the_flood_limit_still_closes_by_reply(desk: Service) -> None:
    """Flood control holds only new tickets: Pat, at the limit (3 new tickets in 10 minutes), closes one
    of them with ``#close``; the reply is not held and the ticket closes once."""
    number, ack, _alert = open_ticket(desk, f"Pat <{PAT}>", "Problem 0")
    for i in (1, 2):
        send(desk, f"Pat <{PAT}>", "support@example.com", f"Problem {i}", "Hi.")
    settled(desk)
    closing = record(desk, reply(desk, ack, "Solved.\n#close", f"Pat <{PAT}>"))
    assert closing["status"] == "accepted" and closing["customer_close"]["acts"], closing.get("reason")
    assert show(desk, number)["status"] == "closed" and outbox(desk, "notice_closed") == [PAT]


def test_a_merged_imported_ticket_still_catches_its_foreign_tag(make_desk: DeskFactory, tmp_path: Path) -> None:
    """Pat's imported Zammad ticket 10045 comes back to life by a reply, and Jane merges it into Lee's ticket B:
    a later ``[Ticket#10045]`` reply lands in B, as A's own tag would; a stranger with that tag joins nothing."""
    desk = make_desk(prepare=zammad_archive(tmp_path / "zammad.mbox", 10045))
    old = by_alias(desk, 10045)
    b, _lee_ack, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down")
    send(desk, f"Pat <{PAT}>", "support@example.com", "Re: [Ticket#10045] Old matter 10045", "It is back.")
    [alert_old] = wait_mail(desk, "jane@example.com", "It is back.")
    assert tag_of(alert_old) == old
    merge(desk, alert_old, b)
    assert show(desk, old)["merged_into"] == b
    late = record(desk, send(desk, f"Pat <{PAT}>", "support@example.com", "Re: [Ticket#10045] Old matter 10045",
                             "Still there."))
    assert late["thread"]["ticket"] == b and late["ticket"] == b, late["thread"]
    stranger = record(desk, send(desk, f"Mallory <{MALLORY}>", "support@example.com",
                                 "Re: [Ticket#10045] Old matter 10045", "Add me."))
    assert stranger["ticket"] not in (b, old) and MALLORY not in show(desk, b)["collaborators"]


def test_an_agents_forward_to_billing_speaks_from_billing(desk: Service) -> None:
    """Jane forwards Pat's mail to billing@ with ``#ack``: the ticket records billing@, and Pat's acknowledgment
    and Jane's receipt both come From billing@; Pat's later mail to support@ changes nothing of that."""
    found = record(desk, send(desk, "Jane Doe <jane@example.com>", "billing@example.com", "Fwd: Invoice twice",
                              forward_body("#ack", subject="Invoice twice"), auth=VOUCHED))
    number = str(found["ticket"])
    assert show(desk, number)["reply_address"] == "billing@example.com"
    [ack] = wait_mail(desk, PAT, "Invoice twice")
    [receipt] = wait_mail(desk, "jane@example.com", "the mail you forwarded is ticket")
    assert parseaddr(ack["From"]) == ("Example Billing", "billing@example.com")
    assert parseaddr(receipt["From"])[1] == "billing@example.com" and receipt["Reply-To"].startswith("billing+a")


def test_merging_two_tickets_of_one_requester_tells_them_once(desk: Service) -> None:
    """Pat's A goes into Pat's B: Pat is B's requester already, so Pat gets one notice (not one per ticket)
    and does not become a collaborator of their own ticket."""
    a, _ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    b, _ack_b, _alert_b = open_ticket(desk, f"Pat <{PAT}>", "Router still broken")
    merge(desk, alert_a, b)
    wait_mail(desk, PAT, "are now one")
    drained(desk)
    assert outbox(desk, "notice_merged") == [PAT]
    survivor = show(desk, b)
    assert survivor["requester"] == PAT and PAT not in survivor["collaborators"] and survivor["merged_from"] == [a]


def test_a_spam_held_reply_released_after_a_merge_lands_in_the_survivor(desk: Service) -> None:
    """Pat's reply on A is held as spam; meanwhile A is merged into Lee's B. Released, the reply goes where
    every mail to A goes now, B, once; the closed shell A gets nothing and is not reopened."""
    a, pat_ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    b, _lee_ack, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down")
    held = record(desk, reply(desk, pat_ack, "It still blinks.", f"Pat <{PAT}>", top=SPAM))
    assert held["status"] == "quarantined"
    merge(desk, alert_a, b)
    released = run_cli(desk.config, "quarantine", "reprocess", str(held["id"]))
    assert released.code == 0, released.stdout + released.stderr
    run_cli(desk.config, "quarantine", "reprocess", str(held["id"]))
    merged, survivor = show(desk, a), show(desk, b)
    assert merged["status"] == "closed" and merged["messages"] == []
    assert [m["body"] for m in survivor["messages"]].count("It still blinks.") == 1


def test_a_replayed_split_mail_splits_once(desk: Service) -> None:
    """The same ``#split`` mail (same Message-ID) delivered twice: one new ticket, one split notice."""
    a, ack, _alert = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    send(desk, f"Pat <{PAT}>", ack["Reply-To"], f"Re: [#{a}] Scanner too", "The scanner is also broken.",
         In_Reply_To=ack["Message-ID"])
    [alert_scan] = wait_mail(desk, "jane@example.com", "scanner is also broken")
    for _ in range(2):
        reply(desk, alert_scan, "#split", "jane@example.com", Message_ID="<split-once@example.com>")
    settled(desk)
    drained(desk)
    assert len(tickets(desk)) == 2 and outbox(desk, "notice_split") == [PAT]
    assert outbox(desk, "command_error") == []


# --------------------------------------------------------------------------- flood control meets agents and status@
def test_an_agent_forwarding_many_customer_mails_is_never_held(desk: Service) -> None:
    """per_sender is 3/10m. Jane (authenticated) forwards five of Pat's mails: five tickets, none held, no
    flood alert; since agents' mail is never counted, Pat's own three new mails afterwards open tickets, and
    one more forward of Pat's mail, with Pat now at the limit, is not held either."""
    mids = [send(desk, "Jane Doe <jane@example.com>", "support@example.com", f"Fwd: Problem {i}",
                 forward_body("", subject=f"Problem {i}", when=f"Mon, Nov 23, 2026 at 10:0{i} AM"), auth=VOUCHED)
            for i in range(5)]
    records = [record(desk, mid) for mid in mids]
    assert [r["status"] for r in records] == ["accepted"] * 5, [r.get("reason") for r in records]
    assert all(r["forwarded"]["by"] == "jane@example.com" for r in records)
    for i in range(3):  # Pat's own three new tickets: the forwards did not count against them
        own = record(desk, send(desk, f"Pat <{PAT}>", "support@example.com", f"My own problem {i}", "Hi."))
        assert own["status"] == "accepted" and own["ticket"] is not None, own.get("reason")
    late = record(desk, send(desk, "Jane Doe <jane@example.com>", "support@example.com", "Fwd: Problem 9",
                             forward_body("", subject="Problem 9", when="Mon, Nov 23, 2026 at 11:09 AM"), auth=VOUCHED))
    assert late["status"] == "accepted", late.get("reason")  # Pat is at the limit now; the agent's forward is not held
    assert sql_rows(desk.config, "SELECT count(*) FROM inbound WHERE hold IS NOT NULL") == [(0,)]
    assert outbox(desk, "admin_alert") == []


def test_status_requests_are_not_new_tickets_for_flood_control(desk: Service) -> None:
    """status@ is never a ticket, so it never counts towards per_sender (3/10m): after one ticket and four
    status requests Pat still opens two more; with three tickets open, a status request is answered, not held."""
    open_ticket(desk, f"Pat <{PAT}>", "First")
    asks = [record(desk, send(desk, f"Pat <{PAT}>", STATUS, "what is open?", "?")) for _ in range(4)]
    assert all(r["status"] == "accepted" and r["ticket"] is None for r in asks), [r.get("reason") for r in asks]
    for subject in ("Second", "Third"):
        opened = record(desk, send(desk, f"Pat <{PAT}>", "support@example.com", subject, "Hi."))
        assert opened["status"] == "accepted" and opened["ticket"] is not None, opened.get("reason")
    after = record(desk, send(desk, f"Pat <{PAT}>", STATUS, "and now?", "?"))
    assert after["status"] == "accepted" and after["status_request"]["answered"] is True, after
    assert sql_rows(desk.config, "SELECT count(*) FROM inbound WHERE hold IS NOT NULL") == [(0,)]


def test_an_agents_forward_to_the_status_address_opens_no_ticket(desk: Service) -> None:
    """A mail to status@ never opens a ticket, whatever it holds, an authenticated agent's forward included."""
    mid = send(desk, "Jane Doe <jane@example.com>", STATUS, "Fwd: Printer broken", forward_body("#ack"), auth=VOUCHED)
    found = record(desk, mid)
    assert found["ticket"] is None and tickets(desk) == []


# --------------------------------------------------------------------------- spam verdicts meet commands
def test_a_spam_verdict_never_holds_an_agents_forward(desk: Service) -> None:
    """The trusted relay marks Jane's authenticated forward as spam: an agent's mail is never held; the
    customer's ticket is opened as for any forward."""
    mid = send(desk, "Jane Doe <jane@example.com>", "support@example.com", "Fwd: Printer broken", forward_body(""),
               auth=VOUCHED, top=SPAM)
    found = record(desk, mid)
    assert found["status"] == "accepted" and found.get("hold") is None, found.get("reason")
    assert show(desk, found["ticket"])["requester"] == PAT


def test_a_requesters_close_marked_spam_is_held_and_closes_once_released(desk: Service) -> None:
    """Pat's ``#close`` (with proof) marked spam by the relay is held like any spam reply: the ticket stays
    open until an admin releases it; then it closes once, with one confirmation, and a second release
    says "not quarantined"."""
    number, ack, _alert = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    held = record(desk, reply(desk, ack, "Works.\n#close", f"Pat <{PAT}>", top=SPAM))
    assert held["status"] == "quarantined" and show(desk, number)["status"] == "open"
    released = run_cli(desk.config, "quarantine", "reprocess", str(held["id"]))
    assert released.code == 0, released.stdout + released.stderr
    assert "not quarantined" in run_cli(desk.config, "quarantine", "reprocess", str(held["id"])).stdout
    assert show(desk, number)["status"] == "closed"
    assert outbox(desk, "notice_closed") == [PAT]


def test_a_status_request_marked_spam_is_not_answered(desk: Service) -> None:
    """Spam to status@ with a customer's address in From (what a spam run forging From looks like): the
    relay's verdict holds it like any spam, so no automatic mail goes out in answer to it; no ticket either."""
    open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    found = record(desk, send(desk, f"Pat <{PAT}>", STATUS, "Cheap pills", "Buy now.", top=SPAM))
    assert found["ticket"] is None and len(tickets(desk)) == 1
    drained(desk)
    assert outbox(desk, "status_list") == [], found.get("status_request")
    assert found["status"] == "quarantined" and found["reason"].startswith("spam: ")
    listed = json.loads(run_cli(desk.config, "quarantine", "list", "--spam", "--json").stdout)
    assert [row["id"] for row in listed] == [found["id"]]


@pytest.mark.parametrize("held_for", ["spam", "flood"])
def test_two_concurrent_releases_of_a_held_mail_make_one_ticket_and_one_ack(desk: Service, held_for: str) -> None:
    """``quarantine reprocess ID`` run twice at once (two processes) on a held new mail: one ticket, one ack."""
    before = 0
    if held_for == "flood":  # per_sender 3/10m: Pat's 4th new mail is held
        for i in range(3):
            send(desk, f"Pat <{PAT}>", "support@example.com", f"Problem {i}", "Hi.")
        before = 3
    held = record(desk, send(desk, f"Pat <{PAT}>", "support@example.com", "You won", "Click.",
                             top=SPAM if held_for == "spam" else ""))
    assert held["status"] == "quarantined" and held_for in held["reason"], held["reason"]
    command = [sys.executable, "-m", "mailgate", "quarantine", "reprocess", str(held["id"]), "-c", str(desk.config)]
    procs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=PATIENCE) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(tickets(desk)) == before + 1 and outbox(desk, "ack_new") == [PAT] * (before + 1)


# --------------------------------------------------------------------------- forget after merge, split, import, forward
def test_forget_after_merge_split_import_and_forward_leaves_no_trace(make_desk: DeskFactory, tmp_path: Path) -> None:
    """Pat's tickets went every way: imported with a Zammad number, merged into Lee's, split off, opened by
    Jane's forward (whose dedupe key is made from Pat's address). ``forget`` leaves Pat's address in no
    table; Lee's ticket and words stay."""
    desk = make_desk(prepare=zammad_archive(tmp_path / "zammad.mbox", 10045))
    old = by_alias(desk, 10045)
    a, _pat_ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    b, _lee_ack, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down", "Lee's own words.")
    merge(desk, alert_a, b)
    c, c_ack, _alert_c = open_ticket(desk, f"Pat <{PAT}>", "Printer jams")
    send(desk, f"Pat <{PAT}>", c_ack["Reply-To"], f"Re: [#{c}] Scanner too", "The scanner is also broken.",
         In_Reply_To=c_ack["Message-ID"])
    [alert_scan] = wait_mail(desk, "jane@example.com", "scanner is also broken")
    record(desk, reply(desk, alert_scan, "#split", "jane@example.com"))
    forwarded = record(desk, send(desk, "Jane Doe <jane@example.com>", "support@example.com", "Fwd: Printer broken",
                                  forward_body("#ack"), auth=VOUCHED))
    assert forwarded["forwarded"]["by"] == "jane@example.com"
    wait_mail(desk, PAT, "are now one")
    drained(desk)
    desk.stop()
    assert pat_traces(dump(desk.config))
    done = run_cli(desk.config, "forget", PAT, "--json")
    assert done.code == 0, done.stderr
    erased = {t["number"] for t in json.loads(done.stdout)["tickets"]}
    assert {old, a, b, c, str(forwarded["ticket"])} <= erased, erased
    after = dump(desk.config)
    assert not pat_traces(after), pat_traces(after)
    assert LEE in after and "Lee's own words." in after
    assert show(desk, b)["requester"] == LEE


def test_forget_drops_the_forward_key_made_from_the_persons_address(make_desk: DeskFactory) -> None:
    """An inline forward is recognised again by a key made from its sender's address (a hash: no literal
    trace for a dump to find, but a guessed address can be tested against it). ``forget`` removes the key
    with everything else, so the same forward afterwards is not matched to the erased ticket: it opens a new
    one, the only place Pat's address is found again."""
    desk = make_desk()
    first = record(desk, send(desk, "Jane Doe <jane@example.com>", "support@example.com", "Fwd: Printer broken",
                              forward_body(""), auth=VOUCHED))
    keys = f"SELECT count(*) FROM ticket_alias WHERE system = 'forwarded' AND ticket_id = " \
           f"(SELECT id FROM ticket WHERE number = '{first['ticket']}')"
    assert sql_rows(desk.config, keys) == [(1,)]
    drained(desk)
    done = run_cli(desk.config, "forget", PAT)
    assert done.code == 0, done.stderr
    assert not pat_traces(dump(desk.config)) and sql_rows(desk.config, keys) == [(0,)]
    assert show(desk, str(first["ticket"]))["requester"] == "erased@erased.invalid"
    again = record(desk, send(desk, "Jane Doe <jane@example.com>", "support@example.com", "Fwd: Printer broken",
                              forward_body(""), auth=VOUCHED))
    assert again["status"] == "accepted" and again["ticket"] != first["ticket"], (again["status"], again["reason"])
    assert show(desk, str(again["ticket"]))["requester"] == PAT


def test_forget_clears_status_requests_and_flood_records_of_the_person(desk: Service) -> None:
    """Pat trips flood control (per_sender 3/10m: the 4th new mail is held, the admin alerted) and asks
    status@ once (answered, no ticket). ``forget`` must clear these too, though none of them belongs to a
    ticket: the status request and its answer, the held mail and the admin's flood alert name Pat."""
    for i in range(4):
        send(desk, f"Pat <{PAT}>", "support@example.com", f"Problem {i}", "Hi.")
    wait_until(lambda: outbox(desk, "admin_alert"), what="the flood alert", log=desk.output)
    assert record(desk, send(desk, f"Pat <{PAT}>", STATUS, "what is open?", "?"))["status_request"]["answered"]
    drained(desk)
    desk.stop()
    done = run_cli(desk.config, "forget", PAT)
    assert done.code == 0, done.stderr
    left = pat_traces(dump(desk.config))
    assert not left, left


def test_retention_of_a_merged_ticket_leaves_the_open_survivors_thread_alone(make_desk: DeskFactory) -> None:
    """Retention (tickets and raw mail: 1s) meets a merge: A (merged, so closed) is old enough to purge, but its
    messages now live in Lee's open ticket B. B's thread keeps its words, its raw mail and its people, and
    Pat's answer to A's old acknowledgment still lands in B after the run."""
    desk = make_desk(retention={"raw": "1s", "tickets": "1s"})
    a, pat_ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken", "My router blinks red.")
    b, _lee_ack, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down", "No internet.")
    merge(desk, alert_a, b)
    k, kim_ack, _alert_k = open_ticket(desk, f"Kim <{KIM}>", "Small thing")
    record(desk, reply(desk, kim_ack, "#close", f"Kim <{KIM}>"))
    assert show(desk, k)["status"] == "closed"

    def planned() -> bool:  # K closed after A was merged: once K is old enough, so is A
        out = run_cli(desk.config, "retention", "run", "--dry-run", "--json")
        return out.code == 0 and k in json.loads(out.stdout)["tickets_anonymised"]["tickets"]

    drained(desk)  # mail still to send keeps a ticket from being purged
    wait_until(planned, what="the closed ticket old enough for retention", log=desk.output)
    raw_before = sql_rows(desk.config, "SELECT count(*) FROM inbound_raw")[0][0]
    done = run_cli(desk.config, "retention", "run", "--json")
    assert done.code == 0, done.stderr
    assert a in json.loads(done.stdout)["tickets_anonymised"]["tickets"]  # the merged shell was purged
    survivor = show(desk, b)
    assert survivor["status"] == "open" and survivor["requester"] == LEE and PAT in survivor["collaborators"]
    assert [m["body"] for m in survivor["messages"]][:2] == ["My router blinks red.", "No internet."]
    pat_mail = sql_rows(desk.config, "SELECT count(*) FROM inbound_raw r JOIN inbound i ON i.id = r.inbound_id "
                                     f"WHERE i.sender = '{PAT}'")[0][0]
    assert pat_mail == 1, (raw_before, pat_mail)
    late = record(desk, reply(desk, pat_ack, "Still blinking.", f"Pat <{PAT}>"))
    assert late["thread"]["ticket"] == b, late["thread"]


def test_an_attached_forward_of_a_merged_mail_names_the_survivor(desk: Service) -> None:
    """Pat wrote to the desk directly (ticket A), A was merged into Lee's B, then Jane forwards Pat's mail as
    an attachment: it is found by its Message-ID and is a duplicate of B, the ticket the mail is in now;
    Jane's receipt names B, and no ticket is opened."""
    send(desk, f"Pat <{PAT}>", "support@example.com", "Invoice wrong", "The invoice is wrong.",
         Message_ID="<inv-1@customer.example>")
    [ack] = wait_mail(desk, PAT, "Invoice wrong")
    a = tag_of(ack)
    [alert_a] = wait_mail(desk, "jane@example.com", f"[#{a}]")
    b, _lee_ack, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down")
    merge(desk, alert_a, b)
    inner = (f"From: Pat <{PAT}>\nTo: jane@example.com\nSubject: Invoice wrong\n"
             "Date: Mon, 23 Nov 2026 10:05:00 +0100\nMessage-ID: <inv-1@customer.example>\n\nThe invoice is wrong.\n")
    body = (f"--fw\nContent-Type: text/plain; charset=utf-8\n\nSee attached.\n--fw\nContent-Type: message/rfc822\n"
            f"Content-Disposition: attachment; filename=original.eml\n\n{inner}\n--fw--\n")
    again = record(desk, send(desk, "Jane Doe <jane@example.com>", "support@example.com", "Fwd: Invoice wrong", body,
                              auth=VOUCHED, Content_Type="multipart/mixed; boundary=fw"))
    assert again["status"] == "duplicate" and again["ticket"] == b, (again["status"], again["ticket"], again["reason"])
    [receipt] = wait_mail(desk, "jane@example.com", "already this ticket")
    assert tag_of(receipt) == b
    assert len(tickets(desk)) == 2


# --------------------------------------------------------------------------- foreign tags meet the collaborator policy
def test_a_foreign_tag_gives_a_stranger_no_more_than_our_tag_under_the_collaborator_policy(
    make_desk: DeskFactory, tmp_path: Path
) -> None:
    """stranger_reply: collaborator. Our tag of an imported ticket makes a stranger a collaborator, as the
    policy says; the old desk's (often sequential) number gives less, as the README says: a follow-up ticket
    of the stranger's own, not the imported ticket, and none of its words are mailed to the stranger."""
    desk = make_desk(prepare=zammad_archive(tmp_path / "zammad.mbox", 10045, 10046),
                     security={"stranger_reply": "collaborator"})
    theirs_t, ours_t = by_alias(desk, 10045), by_alias(desk, 10046)
    theirs = record(desk, send(desk, "Erin <erin@evil.example>", "support@example.com",
                               "Re: [Ticket#10045] Old matter 10045", "Add me."))
    ours = record(desk, send(desk, "Trent <trent@evil.example>", "support@example.com",
                             f"Re: [#{ours_t}] Old matter 10046", "Add me."))
    assert theirs["thread"]["via"] == "foreign_tag" and ours["thread"]["via"] == "tag"
    assert ours["admission"] == {"joins_ticket": True, "adds_collaborator": "trent@evil.example"}, ours["admission"]
    assert theirs["admission"] == {"joins_ticket": False, "follow_up_of": theirs_t}, theirs["admission"]
    assert theirs["ticket"] != theirs_t and "erin@evil.example" not in show(desk, theirs_t)["collaborators"]
    assert len(show(desk, theirs_t)["messages"]) == 1
    drained(desk)
    assert all("Old words" not in text_of(m) for m in mails_to(desk, "erin@evil.example"))


# --------------------------------------------------------------------------- replays
def test_a_replayed_merge_mail_has_one_effect(desk: Service) -> None:
    """The same ``#merge`` mail (same Message-ID) delivered twice over SMTP and once through ``mailgate
    ingest``: one merge, one notice per customer, and no "commands were not applied" mail for the replays."""
    a, _ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    b, _ack_b, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down")
    _mid, raw = raw_mail("jane@example.com", alert_a["Reply-To"], f"Re: {alert_a['Subject']}", f"#merge {b}",
                        Message_ID="<merge-once@example.com>", In_Reply_To=alert_a["Message-ID"])
    for _ in range(2):
        code, answer = smtp_deliver(desk.host, desk.port, raw, mail_from="jane@example.com",
                                    rcpts=(alert_a["Reply-To"],))
        assert code == 250, answer
    piped = run_cli(desk.config, "ingest", stdin=raw)  # and once more through the pipe
    assert piped.code == 0, piped.stderr
    settled(desk)
    drained(desk)
    assert show(desk, a)["merged_into"] == b
    assert sorted(outbox(desk, "notice_merged")) == sorted([PAT, LEE])
    assert outbox(desk, "command_error") == [] and not mails_to(desk, "jane@example.com", "were not applied")


def test_the_same_forward_by_smtp_and_then_by_pipe_is_one_ticket(desk: Service) -> None:
    """Jane's forward arrives over SMTP and the very same bytes are piped through ``mailgate ingest``: one
    ticket, one receipt to Jane, one acknowledgment to Pat."""
    mid, raw = raw_mail("Jane Doe <jane@example.com>", "support@example.com", "Fwd: Printer broken",
                        forward_body("#ack"), auth=VOUCHED)
    code, answer = smtp_deliver(desk.host, desk.port, raw, mail_from="jane@example.com")
    assert code == 250, answer
    first = record(desk, mid)
    piped = run_cli(desk.config, "ingest", stdin=raw)
    assert piped.code == 0, piped.stderr
    settled(desk)
    drained(desk)
    assert [t["number"] for t in tickets(desk)] == [first["ticket"]]
    assert outbox(desk, "forwarded") == ["jane@example.com"] and outbox(desk, "ack_new") == [PAT]
