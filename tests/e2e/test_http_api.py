"""The HTTP API against a real ``mailgate serve``, over real HTTP (httpx): tickets opened by JSON and by
multipart are the same tickets mail makes (acknowledged, threaded when the customer answers by mail,
rules and SLA applied), staff enter calls and notes with agent keys, and a retry with an
``Idempotency-Key`` never makes a second ticket.

The attacker's tests: no key, an unknown key or a key without the scope; a create key writing on a
ticket as a stranger or as an agent, or asking for what only staff may; header injection through the
subject or the requester's name; more requests than the rate, guessing keys, bodies over the limit,
and every malformed body a client could send: each gets its 4xx as problem JSON, and nothing is stored.
A locked database answers 503 with Retry-After, and every 201 given is a ticket after it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import socket
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mailgate.web.keys import new_key
from tests.conftest import (
    PATIENCE,
    DatabaseLocked,
    MakeConfig,
    Service,
    free_port,
    run_cli,
    smtp_deliver,
    sql_rows,
    start_service,
    wait_until,
)
from tests.support.outgoing import mails_to, show, text_of, wait_mail

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}, {"name": "Jerry Sys", "email": "jerry@example.com"}],
    "departments": [{"name": "Support", "members": ["jane@example.com", "jerry@example.com"]}],
}
RULES = {
    "help_topics": [{"name": "General", "department": "Support", "sla": "standard"},
                    {"name": "Billing", "department": "Support", "sla": "standard", "priority": "low"}],
    "default_help_topic": "General",
    "rules": [
        {"name": "urgent-word", "when": {"all": [{"field": "subject", "op": "contains", "value": "URGENT"}]},
         "then": {"priority": "high"}},
        {"name": "hold-word", "when": {"all": [{"field": "subject", "op": "contains", "value": "HOLD ME"}]},
         "then": {"quarantine": "held for review"}},
    ],
}
SLA = {"sla_plans": {"standard": {"first_response": "4h", "resolution": "2d"}}}
KEN = "ken@customer.example"
LIMIT = 256 * 1024  # http.max_request_size of these tests


@dataclass(frozen=True)
class Key:
    name: str
    secret: str
    sha256: str
    entry: dict[str, Any]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


def make_key(name: str, scopes: list[str], **extra: Any) -> Key:
    secret, digest = new_key()
    return Key(name, secret, digest, {"name": name, "sha256": digest, "scopes": scopes, **extra})


PORTAL = make_key("portal", ["create", "read"])
READER = make_key("reader", ["read"])
PHONES = make_key("phones", ["agent"])  # a phone system staff share: each request names its agent
JANE = make_key("jane-laptop", ["agent"], agent="jane@example.com")
SLOW = make_key("slow", ["create"], rate="3/1m")
KEYS = [PORTAL, READER, PHONES, JANE, SLOW]
PORTAL_HEADER = [f"Authorization: Bearer {PORTAL.secret}"]


@dataclass
class Desk:
    svc: Service
    http: httpx.Client

    def open(self, key: Key | None = PORTAL, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        data = {"requester": f"Ken Adams <{KEN}>", "subject": "Router blinks red", "body": "It blinks red.", **body}
        return self.http.post("/api/v1/tickets", json=data, headers={**(key.auth if key else {}), **(headers or {})})

    def write(self, number: str, key: Key = PORTAL, headers: dict[str, str] | None = None, author: str | None = None,
              **body: Any) -> httpx.Response:
        """A message; ``author`` is its ``from``."""
        data = {**body, **({"from": author} if author is not None else {})}
        return self.http.post(f"/api/v1/tickets/{number}/messages", json=data, headers={**key.auth, **(headers or {})})

    def get(self, number: str, key: Key = READER) -> httpx.Response:
        return self.http.get(f"/api/v1/tickets/{number}", headers=key.auth)

    def tickets(self) -> int:
        return int(sql_rows(self.svc.config, "SELECT count(*) FROM ticket")[0][0])

    def messages(self, number: str) -> list[tuple[str, str]]:
        return [(str(k), str(b)) for k, b in sql_rows(
            self.svc.config, f"SELECT m.kind, m.body FROM message m JOIN ticket t ON t.id = m.ticket_id "
                             f"WHERE t.number = '{number}' ORDER BY m.id")]


def start_desk(make_config: MakeConfig, tmp_path: Path, keys: list[Key] = KEYS, **http: Any) -> Iterator[Desk]:
    port = free_port()
    config = make_config(agents=AGENTS, rules=RULES, sla=SLA,
                         http={"listen": f"127.0.0.1:{port}", "max_request_size": LIMIT,
                               "api_keys": [k.entry for k in keys], **http})
    svc = start_service(config, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=PATIENCE) as client:
            wait_until(lambda: _healthy(client), what="the HTTP listener", log=svc.output)
            yield Desk(svc, client)
    finally:
        svc.stop()


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Iterator[Desk]:
    yield from start_desk(make_config, tmp_path)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The answer is ``status`` as RFC 9457 problem JSON; return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert body["status"] == status and body["type"].startswith("/api/problems/") and body["detail"], body
    return dict(body)


def created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "created" and body["url"] == f"/api/v1/tickets/{body['number']}", body
    assert response.headers["location"] == body["url"]
    return str(body["number"])


def events(desk: Desk, number: str) -> list[tuple[str, str, str]]:
    query = ("SELECT e.kind, e.actor, e.detail FROM event e JOIN ticket t ON t.id = e.ticket_id "
             f"WHERE t.number = '{number}' ORDER BY e.id")
    return [(str(k), str(a), str(d)) for k, a, d in sql_rows(desk.svc.config, query)]


# --------------------------------------------------------------------------- api-key new
def test_a_key_from_api_key_new_works_and_only_its_hash_is_configured(make_config: MakeConfig,
                                                                       tmp_path: Path) -> None:
    made = run_cli(tmp_path / "not-needed.yaml", "api-key", "new", "crm", "--scopes", "create,read")
    assert made.code == 0, made.stderr
    secret = next(word for word in made.stdout.split() if word.startswith("mg_"))
    assert len(secret) >= 40
    snippet = made.stdout.split("(SIGHUP):", 1)[1]
    [entry] = yaml.safe_load(textwrap.dedent(snippet))
    assert entry == {"name": "crm", "sha256": hashlib.sha256(secret.encode()).hexdigest(), "scopes": ["create", "read"]}
    assert secret not in snippet
    for desk in start_desk(make_config, tmp_path, keys=[Key("crm", secret, entry["sha256"], entry)]):
        number = created(desk.open(Key("crm", secret, entry["sha256"], entry)))
        assert desk.http.get(f"/api/v1/tickets/{number}", headers={"X-API-Key": secret}).status_code == 200
    refused = run_cli(tmp_path / "not-needed.yaml", "api-key", "new", "crm", "--scopes", "create", "--agent",
                      "jane@example.com")
    assert refused.code == 1 and "goes with the scope 'agent'" in refused.stderr and "mg_" not in refused.stdout


def test_keys_are_added_and_revoked_by_a_reload(desk: Desk) -> None:
    late = make_key("late", ["read"])
    main = yaml.safe_load(desk.svc.config.read_text())
    main["http"]["api_keys"] = [k.entry for k in KEYS if k is not READER] + [late.entry]
    desk.svc.config.write_text(yaml.safe_dump(main, sort_keys=False))
    desk.svc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: desk.get("123456", late).status_code == 404, what="the new key known", log=desk.svc.output)
    problem(desk.get("123456", READER), 401)  # revoked without a restart


# --------------------------------------------------------------------------- the same tickets as mail
def test_a_json_ticket_is_acknowledged_and_the_customers_mail_reply_joins_it(desk: Desk) -> None:
    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    number = created(desk.open(subject="URGENT router blinks red", fields={"contract": "C-1042", "seats": 12},
                               attachments=[{"filename": "led.png", "content_type": "image/png",
                                             "content_base64": base64.b64encode(photo).decode()}]))
    ticket = show(desk.svc, number)
    assert ticket["requester"] == KEN and ticket["subject"] == "URGENT router blinks red"
    assert ticket["priority"] == "high"  # the rules ran
    assert ticket["help_topic"] == "General" and ticket["sla_plan"] == "standard"
    assert ticket["first_response_due"] is not None  # and the SLA clock started
    assert ("channel", "system", "api (portal)") in events(desk, number)
    [ack] = wait_mail(desk.svc, KEN, number)
    reply = (f"From: Ken Adams <{KEN}>\r\nTo: {ack['Reply-To'] or ack['From']}\r\nSubject: Re: {ack['Subject']}\r\n"
             f"Message-ID: <ken-reply@customer.example>\r\nIn-Reply-To: {ack['Message-ID']}\r\n\r\n"
             "Still red after a restart.\r\n").encode()
    code, answer = smtp_deliver(desk.svc.host, desk.svc.port, reply, mail_from=KEN)
    assert code == 250, answer
    wait_until(lambda: len(show(desk.svc, number)["messages"]) == 2, what="Ken's reply on the ticket",
               log=desk.svc.output)
    assert desk.tickets() == 1
    got = desk.get(number)
    assert got.status_code == 200, got.text
    view = got.json()
    assert view["number"] == number and view["channel"] == "api" and view["priority"] == "high"
    assert view["fields"] == {"contract": "C-1042", "seats": "12"}
    assert [m["kind"] for m in view["messages"]] == ["customer", "customer"]
    assert "Still red" in view["messages"][1]["body"]
    assert view["messages"][0]["attachments"] == [{"filename": "led.png", "content_type": "image/png",
                                                   "size": len(photo)}]


def test_a_multipart_ticket_with_an_attachment(desk: Desk) -> None:
    pdf = b"%PDF-1.4 invoice\x00\xff" * 100
    answer = desk.http.post(
        "/api/v1/tickets", headers=PORTAL.auth,
        data={"requester": f"Ken Adams <{KEN}>", "subject": "Invoice wrong", "body": "See the attached invoice.",
              "help_topic": "Billing", "fields": json.dumps({"invoice": "R-77"})},
        files=[("attachments", ("invoice.pdf", pdf, "application/pdf"))])
    number = created(answer)
    ticket = show(desk.svc, number)
    assert ticket["help_topic"] == "Billing" and ticket["priority"] == "low"  # the topic's priority
    [message] = ticket["messages"]
    [attachment] = message["attachments"]
    assert attachment["filename"] == "invoice.pdf" and attachment["size"] == len(pdf)
    assert attachment["content_type"] == "application/pdf"
    view = desk.get(number).json()
    assert view["fields"] == {"invoice": "R-77"}
    assert view["messages"][0]["attachments"] == [{"filename": "invoice.pdf", "content_type": "application/pdf",
                                                   "size": len(pdf)}]
    wait_mail(desk.svc, KEN, number)


def test_held_by_a_rule_is_202_and_no_ticket(desk: Desk) -> None:
    answer = desk.open(subject="HOLD ME please")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "held" and "held for review" in answer.json()["reason"]
    assert desk.tickets() == 0


# --------------------------------------------------------------------------- staff: agent keys
def test_a_phone_call_entered_without_ack_and_an_internal_note(desk: Desk) -> None:
    number = created(desk.open(PHONES, agent="jane@example.com", ack=False, priority="emergency",
                               body="Ken called: line dead since noon."))
    assert ("channel", "jane@example.com", "phone by jane@example.com (phones)") in events(desk, number)
    assert show(desk.svc, number)["priority"] == "emergency"
    # Jane's own key writes as Jane: a note (agents only) and a public reply with a command
    note = desk.write(number, JANE, body="Customer is on the old firmware.", note=True)
    assert note.status_code == 201 and note.json() == {"number": number, "status": "added",
                                                       "message_id": note.json()["message_id"]}, note.text
    assert desk.write(number, JANE, body="#priority high\nWe are on it, Ken.").status_code == 201
    wait_mail(desk.svc, "jerry@example.com", "old firmware")  # the note reaches the other agents
    wait_mail(desk.svc, KEN, "We are on it")  # the public reply reaches Ken ...
    assert not mails_to(desk.svc, KEN, "line dead")  # ... who never got an acknowledgment
    assert not [m for m in mails_to(desk.svc, KEN) if "old firmware" in text_of(m)]  # nor the note
    assert show(desk.svc, number)["priority"] == "high"  # the command worked as by mail
    public = [m["kind"] for m in desk.get(number, READER).json()["messages"]]
    everything = [m["kind"] for m in desk.get(number, JANE).json()["messages"]]
    assert public == ["customer", "agent"] and everything == ["customer", "note", "agent"]
    assert all("old firmware" not in m["body"] for m in desk.get(number, READER).json()["messages"])


def test_an_agent_key_without_its_own_agent_must_name_one(desk: Desk) -> None:
    answer = problem(desk.open(PHONES), 422)
    assert answer["errors"] == [{"field": "agent", "message": "required: the key phones has no agent of its own"}]
    problem(desk.open(PHONES, agent="mallory@evil.example"), 422)  # not in agents.yaml
    problem(desk.open(JANE, agent="jerry@example.com"), 403)  # Jane's key is Jane's only
    assert desk.tickets() == 0


# --------------------------------------------------------------------------- Idempotency-Key
def test_a_retry_with_the_same_key_is_the_same_ticket(desk: Desk) -> None:
    key = {"Idempotency-Key": "order-4711 retry"}
    first = desk.open(headers=key)
    number = created(first)
    again = desk.open(headers=key)
    assert created(again) == number
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    other = problem(desk.open(headers=key, body="Something else entirely."), 422)
    assert other["type"] == "/api/problems/idempotency-key-reused"
    # the same with a file: the composed mail is the same bytes again
    files = [("attachments", ("log.txt", b"line 1\nline 2\n", "text/plain"))]
    form = {"requester": KEN, "subject": "Log attached", "body": "Here is the log."}
    one = desk.http.post("/api/v1/tickets", data=form, files=files, headers={**PORTAL.auth, "Idempotency-Key": "f1"})
    two = desk.http.post("/api/v1/tickets", data=form, files=files, headers={**PORTAL.auth, "Idempotency-Key": "f1"})
    assert created(one) == created(two) and two.headers["idempotent-replayed"] == "true"
    # a message too
    said = [desk.write(number, body="Any news?", headers={"Idempotency-Key": "m1"}, author=KEN)
            for _ in range(2)]
    assert [a.status_code for a in said] == [201, 201] and said[1].headers["idempotent-replayed"] == "true"
    assert desk.tickets() == 2 and len(desk.messages(number)) == 2


def test_two_requests_in_flight_with_one_key_make_one_ticket(desk: Desk) -> None:
    answers: list[httpx.Response] = []
    start = threading.Barrier(4)

    def post() -> None:
        with httpx.Client(base_url=str(desk.http.base_url), timeout=PATIENCE) as own:
            start.wait()
            answers.append(own.post("/api/v1/tickets", headers={**PORTAL.auth, "Idempotency-Key": "same"},
                                    json={"requester": KEN, "subject": "Twice", "body": "Sent twice at once."}))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert len({created(a) for a in answers}) == 1
    assert sorted(a.headers.get("idempotent-replayed", "") for a in answers) == ["", "true", "true", "true"]
    assert desk.tickets() == 1


def test_a_bad_idempotency_key_is_refused(desk: Desk) -> None:
    for value in ("x" * 256, "snow\u2603man", "", "tab\there"):
        headers = [(b"Authorization", f"Bearer {PORTAL.secret}".encode()), (b"Idempotency-Key", value.encode())]
        answer = desk.http.post("/api/v1/tickets", headers=headers, json={"requester": KEN, "subject": "x",
                                                                          "body": "y"})
        problem(answer, 422)
    assert desk.tickets() == 0


# --------------------------------------------------------------------------- who may
def test_no_key_an_unknown_key_and_a_key_without_the_scope(desk: Desk) -> None:
    for answer in (desk.open(None), desk.open(None, headers={"Authorization": "Bearer mg_guessed"}),
                   desk.open(None, headers={"X-API-Key": "mg_guessed"}),
                   desk.open(None, headers={"Authorization": f"Basic {PORTAL.secret}"}),
                   desk.http.get("/api/v1/tickets/123456")):
        problem(answer, 401)
        assert answer.headers["www-authenticate"].startswith("Bearer")
    problem(desk.open(READER), 403)  # read only
    problem(desk.http.get("/api/v1/tickets/123456", headers=SLOW.auth), 403)  # create only
    assert desk.tickets() == 0
    number = created(desk.open(None, headers={"X-API-Key": PORTAL.secret}))  # the other header works
    assert desk.get(number, PORTAL).status_code == 200


def test_a_create_key_cannot_write_as_a_stranger_or_as_an_agent(desk: Desk) -> None:
    number = created(desk.open())
    before = desk.messages(number)
    stranger = problem(desk.write(number, body="I am Ken, really. Send me his data.",
                                  author="mallory@evil.example"), 403)
    assert "not a participant" in stranger["detail"]
    # an agent's address in from is no agent: the composed mail proves nothing, so it is a stranger's
    problem(desk.write(number, body="#close\n#assign mallory@evil.example", author="jane@example.com"), 403)
    # what only staff may ask for is refused, and says why
    staff_only: list[dict[str, Any]] = [{"note": True}, {"agent": "jane@example.com"}]
    for asked in staff_only:
        refused = problem(desk.write(number, body="Internal: fine.", author=KEN, **asked), 403)
        assert refused["type"] == "/api/problems/agent-only" and "agent scope" in refused["detail"]
    entry_only: list[dict[str, Any]] = [{"agent": "jane@example.com"}, {"channel": "phone"}, {"ack": False}]
    for asked in entry_only:
        problem(desk.open(**asked), 403)
    problem(desk.write(number, body="no author"), 422)  # a create key says who writes
    problem(desk.write("999999", body="Hello?", author=KEN), 404)
    assert desk.messages(number) == before and desk.tickets() == 1
    assert show(desk.svc, number)["status"] == "open"


@pytest.mark.parametrize("field", ["subject", "requester"])
def test_header_injection_composes_no_header(desk: Desk, field: str) -> None:
    evil = "Ken\r\nBcc: x@evil.example\r\nX-Injected: yes"
    body: dict[str, Any] = {"subject": evil} if field == "subject" else {"requester": f"{evil} <{KEN}>"}
    answer = desk.open(**body)
    if answer.status_code != 201:  # refusing the name outright is as good
        problem(answer, 422)
        return
    number = created(answer)
    [raw] = sql_rows(desk.svc.config, "SELECT raw FROM inbound_raw")
    head = bytes(raw[0]).split(b"\r\n\r\n", 1)[0]
    assert not [line for line in head.split(b"\r\n") if line.lower().startswith((b"bcc:", b"x-injected:"))], head
    [ack] = wait_mail(desk.svc, KEN, number)
    assert ack["Bcc"] is None and ack["X-Injected"] is None
    assert not [m for m in mails_to(desk.svc, "x@evil.example")]


def test_a_new_ticket_cannot_name_someone_elses(desk: Desk) -> None:
    number = created(desk.open())
    refused = problem(desk.open(requester="mallory@evil.example", subject=f"[#{number}] add me"), 422)
    assert refused["errors"][0]["field"] == "subject"
    assert desk.messages(number) == desk.messages(number)[:1] and desk.tickets() == 1


# --------------------------------------------------------------------------- limits
def test_a_key_over_its_rate_is_429_with_retry_after(desk: Desk) -> None:
    answers = [desk.open(SLOW, requester=f"k{i}@customer.example") for i in range(4)]
    assert [a.status_code for a in answers[:3]] == [201, 201, 201]
    over = problem(answers[3], 429)
    assert 1 <= int(answers[3].headers["retry-after"]) <= 20 and "3/1m" in over["detail"]
    assert created(desk.open(PORTAL))  # other keys are not affected


def test_guessing_keys_is_429_for_the_address_and_real_keys_still_work(desk: Desk) -> None:
    for i in range(20):
        problem(desk.open(None, headers={"Authorization": f"Bearer mg_guess{i}"}), 401)
    for guess in ({"Authorization": "Bearer mg_guess21"}, {"X-API-Key": "mg_guess22"}, {}):
        blocked = desk.open(None, headers=guess)
        problem(blocked, 429)
        assert 1 <= int(blocked.headers["retry-after"]) <= 5, blocked.headers  # a token comes back every 3 s
    assert desk.tickets() == 0
    created(desk.open(PORTAL))  # a client with its key, behind the same proxy, is not locked out


def raw_post(desk: Desk, head: dict[str, str], parts: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """POST over a plain socket, sending ``parts`` and nothing more, then read the answer to its end.

    A client that goes on sending after the 413 (as httpx does: it has no ``Expect: 100-continue``) may
    see the connection reset before it reads the answer; curl waits for the 100 that never comes and
    reads the 413. This sends what such a client has sent when the answer comes.
    """
    port = int(str(desk.http.base_url).rsplit(":", 1)[1].strip("/"))
    lines = ["POST /api/v1/tickets HTTP/1.1", f"Host: 127.0.0.1:{port}", *PORTAL_HEADER,
             *(f"{k}: {v}" for k, v in head.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"".join(parts))
        answer = b""
        while (b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer)) and (
                chunk := sock.recv(65536)):
            answer += chunk
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def _length(answer: bytes) -> int:
    found = re.search(rb"\r\ncontent-length:\s*(\d+)", answer.partition(b"\r\n\r\n")[0], re.IGNORECASE)
    return int(found.group(1)) if found else 1 << 30


def test_a_body_over_the_limit_is_413(desk: Desk) -> None:
    declared = raw_post(desk, {"Content-Type": "application/json", "Content-Length": str(LIMIT + 1),
                               "Expect": "100-continue"}, [])
    streamed = raw_post(desk, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                        [b"%x\r\n%s\r\n" % (8192, b"x" * 8192)] * (LIMIT // 8192 + 1))
    for status, headers, body in (declared, streamed):
        assert status == 413 and headers["content-type"] == "application/problem+json", (status, headers, body)
        assert json.loads(body)["type"] == "/api/problems/too-large"
    assert created(desk.open(body="x" * (LIMIT // 2)))  # under the limit is fine
    assert desk.tickets() == 1


BAD: list[tuple[str, dict[str, Any], int]] = [
    ("not json", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
    ("not utf-8", {"content": b'{"subject": "\xff"}', "headers": {"Content-Type": "application/json"}}, 400),
    ("a list", {"json": [1, 2]}, 422),
    ("wrong types", {"json": {"requester": 5, "subject": ["x"], "body": {"a": 1}}}, 422),
    ("unknown field", {"json": {"requester": KEN, "subject": "x", "body": "y", "priorty": "high"}}, 422),
    ("missing fields", {"json": {}}, 422),
    ("bad priority", {"json": {"requester": KEN, "subject": "x", "body": "y", "priority": "urgent!!"}}, 422),
    ("unknown topic", {"json": {"requester": KEN, "subject": "x", "body": "y", "help_topic": "Nope"}}, 422),
    ("bad field name", {"json": {"requester": KEN, "subject": "x", "body": "y", "fields": {"a b": 1}}}, 422),
    ("nested field", {"json": {"requester": KEN, "subject": "x", "body": "y", "fields": {"a": {"b": 1}}}}, 422),
    ("huge number", {"content": b'{"requester": "k@c.example", "subject": "x", "body": "y", "fields": {"n": '
                                + b"9" * 5000 + b"}}", "headers": {"Content-Type": "application/json"}}, 400),
    ("NaN", {"content": b'{"requester": "k@c.example", "subject": "x", "body": "y", "fields": {"n": NaN}}',
             "headers": {"Content-Type": "application/json"}}, 422),
    ("huge subject", {"json": {"requester": KEN, "subject": "x" * 100_000, "body": "y"}}, 422),
    ("not an address", {"json": {"requester": "Ken Adams", "subject": "x", "body": "y"}}, 422),
    ("two addresses", {"json": {"requester": f"{KEN}, boss@customer.example", "subject": "x", "body": "y"}}, 422),
    ("our own address", {"json": {"requester": "support@example.com", "subject": "x", "body": "y"}}, 422),
    ("an agent", {"json": {"requester": "jane@example.com", "subject": "x", "body": "y"}}, 422),
    ("empty body", {"json": {"requester": KEN, "subject": "x", "body": "  \n "}}, 422),
    ("NUL in body", {"json": {"requester": KEN, "subject": "x", "body": "a\u0000b"}}, 422),
    ("bad base64", {"json": {"requester": KEN, "subject": "x", "body": "y",
                             "attachments": [{"filename": "a", "content_base64": "***"}]}}, 422),
    ("bad content type", {"json": {"requester": KEN, "subject": "x", "body": "y", "attachments": [
        {"filename": "a", "content_type": "text/plain\r\nBcc: x@evil.example", "content_base64": "eA=="}]}}, 422),
    ("text/plain", {"content": b"requester=ken", "headers": {"Content-Type": "text/plain"}}, 415),
    ("no content type", {"content": b'{"requester": "k@c.example"}'}, 415),
    ("urlencoded", {"data": {"requester": KEN, "subject": "x", "body": "y"}}, 415),
    ("multipart unknown part", {"files": {"x": (None, "1"), "requester": (None, KEN)}}, 422),
    ("multipart file as subject", {"files": {"subject": ("s.txt", b"x"), "requester": (None, KEN)}}, 422),
    ("multipart bad fields", {"files": {"requester": (None, KEN), "subject": (None, "x"), "body": (None, "y"),
                                        "fields": (None, "[1,2")}}, 422),
    ("multipart bad ack", {"files": {"requester": (None, KEN), "subject": (None, "x"), "body": (None, "y"),
                                     "ack": (None, "maybe")}}, 422),
    ("broken multipart", {"content": b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
                          "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400),
]


def test_whatever_a_client_sends_is_a_problem_not_a_500(desk: Desk) -> None:
    wrong = []
    for case, request_, status in BAD:  # one daemon for all of them: each case is a request, not a set-up
        given = dict(request_)
        headers = {**PORTAL.auth, **given.pop("headers", {})}
        try:
            problem(desk.http.post("/api/v1/tickets", headers=headers, **given), status)
        except AssertionError as exc:
            wrong.append(f"{case}: {exc}")
    assert not wrong, "\n".join(wrong)
    assert desk.tickets() == 0
    assert "Traceback" not in desk.svc.output()


def test_bad_paths_and_numbers_are_problems_too(desk: Desk) -> None:
    problem(desk.http.get("/api/v1/tickets/%0D%0ABcc:x", headers=READER.auth), 422)
    problem(desk.write("%0D%0ABcc:x", body="hi", author=KEN), 422)
    problem(desk.get("000000"), 404)
    problem(desk.http.get("/api/v1/nothing", headers=READER.auth), 404)
    problem(desk.http.delete("/api/v1/tickets/123456", headers=READER.auth), 405)


# --------------------------------------------------------------------------- the database away
def test_a_locked_database_is_503_and_every_201_is_a_ticket(desk: Desk) -> None:
    """Three clients post without pause before, during and after the database is locked: each answer is
    201 or 503, every 201's number is a ticket afterwards, and a 503's retry with its key is stored once."""
    answers: list[tuple[str, httpx.Response]] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(base_url=str(desk.http.base_url), timeout=PATIENCE) as own:
            for i in range(10_000):
                if stop.is_set():
                    return
                key = f"w{worker}-{i}"
                answers.append((key, own.post("/api/v1/tickets", headers={**PORTAL.auth, "Idempotency-Key": key},
                                              json={"requester": f"{key}@customer.example", "subject": key,
                                                    "body": "Hello."})))

    def codes() -> list[int]:
        return [a.status_code for _, a in list(answers)]

    threads = [threading.Thread(target=client, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: codes().count(201) >= 3, what="tickets before the lock", log=desk.svc.output)
        with DatabaseLocked(desk.svc.config):
            wait_until(lambda: codes().count(503) >= 3, what="503s while locked", log=desk.svc.output)
        after = len(answers)
        wait_until(lambda: codes()[after:].count(201) >= 6, what="tickets after the lock", log=desk.svc.output)
    finally:
        stop.set()
        for t in threads:
            t.join(PATIENCE)
    assert set(codes()) == {201, 503}, sorted(set(codes()))
    refused = [key for key, a in answers if a.status_code == 503]
    for key, answer in answers:
        if answer.status_code == 503:
            problem(answer, 503)
            assert int(answer.headers["retry-after"]) >= 1, key
    stored = {str(n) for (n,) in sql_rows(desk.svc.config, "SELECT number FROM ticket")}
    given = {str(a.json()["number"]) for _, a in answers if a.status_code == 201}
    assert given <= stored and len(stored) == len(given)  # every 201 is a ticket, and no 503 made one
    for key in refused:  # the clients retry: each is stored now, once
        created(desk.open(headers={"Idempotency-Key": key}, requester=f"{key}@customer.example", subject=key,
                          body="Hello."))
    assert desk.tickets() == len(answers)
