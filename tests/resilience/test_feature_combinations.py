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
from tests.support.outgoing import mails_to, text_of, wait_mail

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


def show(svc: Service, number: str) -> dict[str, Any]:
    return dict(cli_json(svc.config, "tickets", "show", number))


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
    """Pat's ticket A is merged into Lee's B. Pat answers A's acknowledgment with ``#close``: the reply lands
    in B, where Pat is only a collaborator, so B stays open (only B's requester closes B). A stranger's
    ``#close`` with A's tag changes nothing. Lee's own ``#close`` (with proof) does close B."""
    a, pat_ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    b, lee_ack, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down")
    merge(desk, alert_a, b)
    late = record(desk, reply(desk, pat_ack, "Works now.\n#close", f"Pat <{PAT}>"))
    assert late["thread"]["ticket"] == b and not late["customer_close"]["acts"], late.get("customer_close")
    stranger = record(desk, send(desk, f"Mallory <{MALLORY}>", "support@example.com", f"Re: [#{a}] Router broken",
                                 "#close"))
    assert not (stranger.get("customer_close") or {}).get("acts")
    [notice] = wait_mail(desk, PAT, "are now one")  # in B's thread, signed to Pat: proof Pat wrote, not a right
    on_notice = record(desk, reply(desk, notice, "#close", f"Pat <{PAT}>"))
    assert on_notice["thread"]["ticket"] == b and not on_notice["customer_close"]["acts"]
    assert show(desk, b)["status"] == "open" and show(desk, a)["merged_into"] == b
    assert outbox(desk, "notice_closed") == []
    record(desk, reply(desk, lee_ack, "All good.\n#close", f"Lee <{LEE}>"))
    assert show(desk, b)["status"] == "closed"
    assert outbox(desk, "notice_closed") == [LEE]


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


# --------------------------------------------------------------------------- flood control meets agents and status@
def test_an_agent_forwarding_many_customer_mails_is_never_held(desk: Service) -> None:
    """per_sender is 3/10m. Jane (authenticated) forwards five of Pat's mails: five tickets, none held, no
    flood alert; and since agents' mail is never counted, Pat's own new mail afterwards opens a ticket."""
    mids = [send(desk, "Jane Doe <jane@example.com>", "support@example.com", f"Fwd: Problem {i}",
                 forward_body("", subject=f"Problem {i}", when=f"Mon, Nov 23, 2026 at 10:0{i} AM"), auth=VOUCHED)
            for i in range(5)]
    records = [record(desk, mid) for mid in mids]
    assert [r["status"] for r in records] == ["accepted"] * 5, [r.get("reason") for r in records]
    assert all(r["forwarded"]["by"] == "jane@example.com" for r in records)
    own = record(desk, send(desk, f"Pat <{PAT}>", "support@example.com", "My own problem", "Hi."))
    assert own["status"] == "accepted" and own["ticket"] is not None, own.get("reason")
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


def test_two_concurrent_releases_of_held_spam_make_one_ticket_and_one_ack(desk: Service) -> None:
    """``quarantine reprocess ID`` run twice at once (two processes) on a held new mail: one ticket, one ack."""
    held = record(desk, send(desk, f"Pat <{PAT}>", "support@example.com", "You won", "Click.", top=SPAM))
    assert held["status"] == "quarantined"
    command = [sys.executable, "-m", "mailgate", "quarantine", "reprocess", str(held["id"]), "-c", str(desk.config)]
    procs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=PATIENCE) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(tickets(desk)) == 1 and outbox(desk, "ack_new") == [PAT]


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


def test_a_forward_of_a_forgotten_customers_mail_is_not_matched_by_the_erased_key(make_desk: DeskFactory) -> None:
    """Forget replaces the address inside a forward's dedupe key, so the key holds no trace; the same
    forward after that neither leaks the address back from old rows nor fails: it is stored (as a new
    ticket or a duplicate), and Pat's address is only where the new mail put it."""
    desk = make_desk()
    first = record(desk, send(desk, "Jane Doe <jane@example.com>", "support@example.com", "Fwd: Printer broken",
                              forward_body(""), auth=VOUCHED))
    drained(desk)
    done = run_cli(desk.config, "forget", PAT)
    assert done.code == 0, done.stderr
    assert not pat_traces(dump(desk.config))
    again = record(desk, send(desk, "Jane Doe <jane@example.com>", "support@example.com", "Fwd: Printer broken",
                              forward_body(""), auth=VOUCHED))
    assert again["status"] in ("accepted", "duplicate"), again
    assert first["ticket"] is not None and show(desk, str(first["ticket"]))["requester"] == "erased@erased.invalid"


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

    wait_until(planned, what="the closed ticket old enough for retention", log=desk.output)
    raw_before = sql_rows(desk.config, "SELECT count(*) FROM inbound_raw")[0][0]
    done = run_cli(desk.config, "retention", "run", "--json")
    assert done.code == 0, done.stderr
    survivor = show(desk, b)
    assert survivor["status"] == "open" and survivor["requester"] == LEE and PAT in survivor["collaborators"]
    assert [m["body"] for m in survivor["messages"]][:2] == ["My router blinks red.", "No internet."]
    pat_mail = sql_rows(desk.config, "SELECT count(*) FROM inbound_raw r JOIN inbound i ON i.id = r.inbound_id "
                                     f"WHERE i.sender = '{PAT}'")[0][0]
    assert pat_mail == 1, (raw_before, pat_mail, sql_rows(desk.config, "SELECT i.id, i.ticket_id, i.sender, i.status, r.inbound_id FROM inbound i LEFT JOIN inbound_raw r ON r.inbound_id = i.id"), done.stdout)
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
def test_a_foreign_tag_gives_a_stranger_what_our_tag_gives_under_the_collaborator_policy(
    make_desk: DeskFactory, tmp_path: Path
) -> None:
    """stranger_reply: collaborator. A stranger with an imported ticket's Zammad tag is admitted exactly as
    another stranger with our tag of a twin imported ticket: same admission, same collaborator status."""
    desk = make_desk(prepare=zammad_archive(tmp_path / "zammad.mbox", 10045, 10046),
                     security={"stranger_reply": "collaborator"})
    theirs_t, ours_t = by_alias(desk, 10045), by_alias(desk, 10046)
    theirs = record(desk, send(desk, "Erin <erin@evil.example>", "support@example.com",
                               "Re: [Ticket#10045] Old matter 10045", "Add me."))
    ours = record(desk, send(desk, "Trent <trent@evil.example>", "support@example.com",
                             f"Re: [#{ours_t}] Old matter 10046", "Add me."))
    assert theirs["thread"]["via"] == "foreign_tag" and ours["thread"]["via"] == "tag"
    def shape(admission: dict[str, Any], stranger: str, ticket: str) -> dict[str, Any]:
        """The admission with the stranger and the ticket named alike, so the two can be compared."""
        return {k: {stranger: "STRANGER", ticket: "TICKET"}.get(str(v), v) for k, v in admission.items() if k != "via"}

    assert shape(theirs["admission"], "erin@evil.example", theirs_t) == \
        shape(ours["admission"], "trent@evil.example", ours_t), (theirs["admission"], ours["admission"])
    assert ("erin@evil.example" in show(desk, theirs_t)["collaborators"]) == \
        ("trent@evil.example" in show(desk, ours_t)["collaborators"])


# --------------------------------------------------------------------------- replays
def test_a_replayed_merge_mail_has_one_effect(desk: Service) -> None:
    """The same ``#merge`` mail (same Message-ID) delivered twice: one merge, one notice per customer, and
    no "commands were not applied" mail for the replay."""
    a, _ack, alert_a = open_ticket(desk, f"Pat <{PAT}>", "Router broken")
    b, _ack_b, _alert_b = open_ticket(desk, f"Lee <{LEE}>", "Internet down")
    mid = merge(desk, alert_a, b, Message_ID="<merge-once@example.com>")
    merge(desk, alert_a, b, Message_ID=mid)
    drained(desk)
    assert show(desk, a)["merged_into"] == b
    assert sorted(outbox(desk, "notice_merged")) == sorted([PAT, LEE])
    assert outbox(desk, "command_error") == [] and not mails_to(desk, "jane@example.com", "were not applied")
    assert sql_rows(desk.config, "SELECT count(*) FROM inbound WHERE message_id = '<merge-once@example.com>'") \
        in ([(1,)], [(2,)])


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
    wait_until(lambda: sql_rows(desk.config, "SELECT count(*) FROM inbound WHERE processed_at IS NULL") == [(0,)],
               what="all mail processed", log=desk.output)
    drained(desk)
    assert [t["number"] for t in tickets(desk)] == [first["ticket"]]
    assert outbox(desk, "forwarded") == ["jane@example.com"] and outbox(desk, "ack_new") == [PAT]
