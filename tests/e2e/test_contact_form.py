"""The contact form and the status page, on a real daemon: a real browser for what a customer does, a
plain HTTP client for what an attacker does.

A form's ticket is made by the same pipeline as mail (rules, SLA, acknowledgment); the acknowledgment
carries a signed link to the ticket's status page, which shows the public thread (never an internal
note) and takes a reply that lands on the ticket as the requester's.

The attacker's tests: posts without our CSRF token, with another's, a forged or an expired one; the
hidden field bots fill; a status link altered to another ticket, forged, expired, or replayed after
the requester was erased; script in what a customer typed; files too large or too many, a body over
the server's limit; more posts than the rate allows. Each is refused with a page, never a 500, and
nothing is stored.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from mailgate.config import load_config
from mailgate.identity import Identity, load_secret
from mailgate.web import csrf, status_link
from tests.conftest import (
    PATIENCE,
    DatabaseLocked,
    MakeConfig,
    Service,
    free_port,
    run_cli,
    sql_rows,
    start_service,
    wait_until,
)
from tests.support.browser import focused_name, press, unlabelled_inputs, wait_for
from tests.support.outgoing import mails_to, show, text_of, wait_mail

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}],
    "departments": [{"name": "Support", "members": ["jane@example.com"]}],
}
RULES = {
    "help_topics": [{"name": "General", "department": "Support", "sla": "standard"},
                    {"name": "Billing", "department": "Support", "sla": "standard", "priority": "low"}],
    "default_help_topic": "General",
}
SLA = {"sla_plans": {"standard": {"first_response": "4h", "resolution": "2d"}}}
PAT = "pat@customer.example"
KIM = "kim@other.example"
NOTE = "Internal: customer is on the legacy firmware 1.2, do not tell them"
LINK = re.compile(r"http://127\.0\.0\.1:\d+/status/[A-Za-z0-9_.-]+")


@dataclass
class Desk:
    svc: Service
    base: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=PATIENCE, follow_redirects=False)

    def identity(self) -> Identity:
        """The desk's own key, read from its state dir: only to make tokens an attacker could not."""
        state = load_config(self.svc.config).main.state_dir
        return Identity(load_secret(state / "secret"), "example.com")

    def tickets(self) -> int:
        return int(sql_rows(self.svc.config, "SELECT count(*) FROM ticket")[0][0])

    def inbound(self) -> int:
        return int(sql_rows(self.svc.config, "SELECT count(*) FROM inbound")[0][0])


def start_desk(make_config: MakeConfig, tmp_path: Path, form: dict[str, Any] | None = None,
               **http: Any) -> Desk:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {"listen": f"127.0.0.1:{port}", "public_url": base,
                "form": {"enabled": True, "max_attachments": 2, "max_attachment_size": "64KiB", "rate": "100/10m",
                         **(form or {})},
                **http}
    svc = start_service(make_config(agents=AGENTS, rules=RULES, sla=SLA, http=settings), tmp_path / "serve.log")
    try:
        wait_until(lambda: _healthy(base), what="the HTTP listener", log=svc.output)
    except BaseException:
        svc.stop()
        raise
    return Desk(svc, base)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Iterator[Desk]:
    made = start_desk(make_config, tmp_path)
    yield made
    made.svc.stop()


# --------------------------------------------------------------------------- helpers
def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:2000]
    return m.group(1)


def fields(**given: str) -> dict[str, str]:
    base = {"name": "Pat Doe", "email": PAT, "subject": "Printer on fire", "message": "Help, it burns.",
            "topic": "", "website": ""}
    return {**base, **given}


Files = list[tuple[str, tuple[str, bytes, str]]]


def post_contact(client: httpx.Client, *, files: Files | None = None, token: str | None = None,
                 **given: str) -> httpx.Response:
    """Open the form (for its token and cookie, as a browser does) and send it."""
    page = client.get("/contact")
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf_of(page.text) if token is None else token, **fields(**given)}
    return client.post("/contact", data=data, files=files or [("attachments", ("", b"", "application/octet-stream"))])


def filed_number(response: httpx.Response, client: httpx.Client) -> str:
    assert response.status_code == 303, response.text
    thanks = client.get("/" + response.headers["location"].lstrip("/"))
    m = re.search(r"ticket <strong>\[#(\d+)\]</strong>", thanks.text)
    assert m, thanks.text
    return m.group(1)


def file_ticket(desk: Desk, **given: str) -> str:
    with desk.client() as client:
        return filed_number(post_contact(client, files=None, token=None, **given), client)


def status_url(desk: Desk, number: str, to: str = PAT) -> str:
    [ack] = wait_mail(desk.svc, to, number)
    m = LINK.search(text_of(ack))
    assert m, text_of(ack)
    html = ack.get_body(("html",))
    assert html is not None and m.group(0) in html.get_content()
    return m.group(0)


def alert_for(desk: Desk, number: str) -> EmailMessage:
    [alert] = wait_mail(desk.svc, "jane@example.com", number)
    return alert


def agent_writes(desk: Desk, alert: EmailMessage, body: str) -> None:
    """Jane answers her alert from her mail client (its Reply-To is her own signed address)."""
    raw = (f"From: Jane Doe <jane@example.com>\r\nTo: {alert['Reply-To']}\r\nSubject: Re: {alert['Subject']}\r\n"
           f"Message-ID: <{time.monotonic_ns()}@example.com>\r\nIn-Reply-To: {alert['Message-ID']}\r\n\r\n"
           f"{body}\r\n").encode()
    with desk.svc.smtp() as smtp:
        smtp.sendmail("jane@example.com", [str(alert["Reply-To"])], raw)


def kinds(desk: Desk, number: str) -> list[str]:
    return [m["kind"] for m in show(desk.svc, number)["messages"]]


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text


# --------------------------------------------------------------------------- the customer, in a browser
def test_a_customer_files_by_keyboard_follows_the_link_and_replies(desk: Desk, browser: webdriver.Chrome,
                                                                   tmp_path: Path) -> None:
    browser.get(f"{desk.base}/contact")
    wait_for(browser, lambda d: d.title == "Contact support", what="the contact form")
    assert unlabelled_inputs(browser) == []
    typed = {"name": "Pat Doe", "email": PAT, "subject": "Printer on fire"}
    for name, text in typed.items():
        press(browser, Keys.TAB)
        assert focused_name(browser) == name, "TAB goes through the fields in reading order (never the hidden one)"
        press(browser, text)
    press(browser, Keys.TAB)
    assert focused_name(browser) == "topic"  # left as it is
    press(browser, Keys.TAB)
    assert focused_name(browser) == "message"
    press(browser, "It smokes since this morning.")
    press(browser, Keys.TAB)
    assert focused_name(browser) == "attachments"
    photo = tmp_path / "printer.txt"
    photo.write_text("a photo of the smoke, in words")
    browser.switch_to.active_element.send_keys(str(photo))  # what choosing a file in the dialog does
    press(browser, Keys.TAB)
    assert browser.switch_to.active_element.tag_name == "button"
    press(browser, Keys.ENTER)

    wait_for(browser, lambda d: d.title.startswith("Thank you"), what="the thank-you page")
    number = re.search(r"\[#(\d+)\]", browser.find_element(By.TAG_NAME, "main").text)
    assert number, browser.page_source
    ticket = show(desk.svc, number.group(1))
    number_text = number.group(1)
    assert ticket["requester"] == PAT and ticket["subject"] == "Printer on fire"
    assert ticket["help_topic"] == "General" and ticket["sla_plan"] == "standard"  # the rules ran, as for mail
    [first] = ticket["messages"]
    assert "It smokes since this morning." in first["body"]
    assert [a["filename"] for a in first["attachments"]] == ["printer.txt"]
    assert "email acknowledgment" in browser.find_element(By.TAG_NAME, "main").text

    link = status_url(desk, number_text)
    alert = alert_for(desk, number_text)
    agent_writes(desk, alert, f"#note\n{NOTE}")
    agent_writes(desk, alert, "Please unplug it and let it cool down.")
    wait_until(lambda: kinds(desk, number_text) == ["customer", "note", "agent"], what="the note and the answer",
               log=desk.svc.output)

    browser.get(link)
    wait_for(browser, lambda d: f"[#{number_text}]" in d.title, what="the status page")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Printer on fire" in page and "Waiting for your reply" in page
    assert "It smokes since this morning." in page and "Please unplug it and let it cool down." in page
    assert "printer.txt" in page
    assert NOTE not in browser.page_source and "legacy firmware" not in browser.page_source
    assert unlabelled_inputs(browser) == []

    press(browser, Keys.TAB)
    assert focused_name(browser) == "message"
    press(browser, "Unplugged it, the smoke has stopped.")
    press(browser, Keys.TAB, Keys.TAB)
    assert browser.switch_to.active_element.tag_name == "button"
    press(browser, Keys.ENTER)
    wait_for(browser, lambda d: "your message was added" in d.find_element(By.TAG_NAME, "main").text,
             what="the page again, with the reply")
    assert "Unplugged it, the smoke has stopped." in browser.find_element(By.TAG_NAME, "main").text
    ticket = show(desk.svc, number_text)
    assert [m["kind"] for m in ticket["messages"]] == ["customer", "note", "agent", "customer"]
    assert ticket["messages"][-1]["body"].strip() == "Unplugged it, the smoke has stopped."
    assert ticket["status"] == "open"  # the customer's answer hands the turn back to the desk, as by mail
    wait_mail(desk.svc, "jane@example.com", "Unplugged it")  # and the agent hears of it, as of mail


def test_errors_are_shown_next_to_the_fields_with_the_values_kept(desk: Desk, browser: webdriver.Chrome) -> None:
    browser.get(f"{desk.base}/contact")
    wait_for(browser, lambda d: d.title == "Contact support", what="the contact form")
    browser.find_element(By.ID, "f-email").send_keys("not an address")
    browser.find_element(By.ID, "f-subject").send_keys("Kept <as typed>")
    browser.find_element(By.TAG_NAME, "button").click()
    wait_for(browser, lambda d: d.title.startswith("Error:"), what="the form with its errors")
    summary = browser.find_element(By.CSS_SELECTOR, "[role=alert]")
    assert "Your email address" in summary.text and "Your message: required" in summary.text
    assert browser.find_element(By.ID, "e-email").text.startswith("not an email address")
    assert browser.find_element(By.ID, "f-email").get_attribute("aria-invalid") == "true"
    assert "e-email" in (browser.find_element(By.ID, "f-email").get_attribute("aria-describedby") or "")
    assert browser.find_element(By.ID, "f-subject").get_attribute("value") == "Kept <as typed>"
    assert browser.find_element(By.ID, "f-subject").get_attribute("aria-invalid") is None
    assert unlabelled_inputs(browser) == []
    assert desk.tickets() == 0


@pytest.mark.parametrize("browser", ["phone"], indirect=True)
def test_both_pages_fit_a_phone(desk: Desk, browser: webdriver.Chrome) -> None:
    number = file_ticket(desk, subject="A-very-long-subject-without-spaces-" * 4, message="word " * 400)
    for url in (f"{desk.base}/contact", status_url(desk, number)):
        browser.get(url)
        wait_for(browser, lambda d: d.execute_script("return document.readyState") == "complete", what=url)
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[1] == 390 and width[0] <= width[1], f"{url} scrolls sideways: {width}"
        assert unlabelled_inputs(browser) == []


# --------------------------------------------------------------------------- what the page is made of
def test_the_form_is_a_plain_page_with_a_hidden_trap_and_a_strict_cookie(desk: Desk) -> None:
    with desk.client() as client:
        page = client.get("/contact")
    assert page.status_code == 200
    html = page.text
    assert '<html lang="en">' in html and "<title>Contact support</title>" in html and 'name="viewport"' in html
    assert "<script" not in html and "http" not in html.split("<body>", 1)[1]  # no script, no external asset
    trap = re.search(r'<div class="hp" aria-hidden="true">\s*<label for="f-website">[^<]+</label>\s*<input ([^>]+)>',
                     html)
    assert trap and 'tabindex="-1"' in trap.group(1) and 'autocomplete="off"' in trap.group(1)
    for name in ("name", "email", "subject", "topic", "message", "attachments"):
        assert f'<label for="f-{name}">' in html and f'id="f-{name}"' in html
    assert '<option value="Billing">' in html and 'type="file" multiple' in html
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # http: not Secure
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script at all
    assert page.headers["referrer-policy"] == "no-referrer"


def test_a_form_ticket_goes_through_the_rules_like_mail(desk: Desk) -> None:
    number = file_ticket(desk, topic="Billing", subject="Invoice twice")
    ticket = show(desk.svc, number)
    assert ticket["help_topic"] == "Billing" and ticket["priority"] == "low"  # the topic's defaults
    events = sql_rows(desk.svc.config, "SELECT e.kind, e.detail FROM event e JOIN ticket t ON t.id = e.ticket_id "
                                       f"WHERE t.number = '{number}'")
    assert ("channel", "form (form)") in [tuple(e) for e in events]
    assert "source=form" in desk.svc.output()
    assert run_cli(desk.svc.config, "check-config").code == 0  # the acknowledgment renders with its link
    # mail customers get the link as well: the status page is the ticket's, whichever way it came
    with desk.svc.smtp() as smtp:
        smtp.sendmail(KIM, ["support@example.com"],
                      f"From: Kim <{KIM}>\r\nTo: support@example.com\r\nSubject: By mail\r\n\r\nHi\r\n".encode())
    [ack] = wait_mail(desk.svc, KIM, "By mail")
    mailed = re.search(r"\[#(\d+)\]", str(ack["Subject"]))
    assert mailed
    with desk.client() as client:
        page = client.get(path_of(status_url(desk, mailed.group(1), KIM)))
    assert page.status_code == 200 and "By mail" in page.text


def test_the_database_down_is_a_503_with_retry_after_and_nothing_stored(desk: Desk) -> None:
    with desk.client() as client:
        page = client.get("/contact")
        with DatabaseLocked(desk.svc.config):
            sent = client.post("/contact", data={"csrf_token": csrf_of(page.text), **fields()})
    assert sent.status_code == 503, sent.text
    assert sent.headers["retry-after"].isdigit()
    assert "nothing was kept" in sent.text and "Help, it burns." in sent.text  # the form again, as typed
    assert desk.tickets() == 0 and desk.inbound() == 0


def reply_on_page(desk: Desk, link: str, text: str) -> httpx.Response:
    with desk.client() as client:
        page = client.get(path_of(link))
        assert page.status_code == 200, page.text
        return client.post(path_of(link), data={"csrf_token": csrf_of(page.text), "message": text})


def test_a_reply_on_a_closed_ticket_reopens_it_as_mail_would(desk: Desk) -> None:
    number = file_ticket(desk)
    link = status_url(desk, number)
    agent_writes(desk, alert_for(desk, number), "#status closed")
    wait_until(lambda: show(desk.svc, number)["status"] == "closed", what="the ticket closed", log=desk.svc.output)
    with desk.client() as client:
        assert "Closed" in client.get(path_of(link)).text
    answer = reply_on_page(desk, link, "It is burning again.")
    assert answer.status_code == 303 and answer.headers["location"].endswith("?sent=1")
    ticket = show(desk.svc, number)
    assert ticket["status"] == "open" and ticket["messages"][-1]["body"].strip() == "It is burning again."
    assert desk.tickets() == 1  # within lifecycle.reopen_window: the same ticket, no follow-up


def test_a_merged_ticket_says_where_it_went(desk: Desk) -> None:
    first = file_ticket(desk, subject="Printer smokes")
    second = file_ticket(desk, subject="Printer still smokes")
    link = status_url(desk, first)
    agent_writes(desk, alert_for(desk, first), f"#merge {second}")
    wait_until(lambda: sql_rows(desk.svc.config, f"SELECT merged_into FROM ticket WHERE number = '{first}'")[0][0],
               what="the merge", log=desk.svc.output)
    with desk.client() as client:
        page = client.get(path_of(link))
        assert page.status_code == 200
        assert f"merged into [#{second}]" in page.text and "<textarea" not in page.text
        survivor = re.search(r'<a href="([^"]+)">Open \[#' + second, page.text)
        assert survivor, page.text
        there = client.get(f"/status/{survivor.group(1)}")
    assert there.status_code == 200 and "Printer still smokes" in there.text


# --------------------------------------------------------------------------- attackers: CSRF
def test_posts_without_our_csrf_token_are_refused_and_store_nothing(desk: Desk) -> None:
    identity = desk.identity()
    with desk.client() as client:
        # no token and no cookie: a page of another site posting to us
        bare = client.post("/contact", data=fields())
        assert bare.status_code == 403 and "security token" in bare.text
        assert "Help, it burns." in bare.text  # shown again, nothing lost, nothing filed
        # a token that is ours but not this browser's cookie (another visitor's page)
        other = csrf_of(httpx.get(f"{desk.base}/contact").text)
        client.get("/contact")
        mismatch = client.post("/contact", data={"csrf_token": other, **fields()})
        assert mismatch.status_code == 403 and "does not match" in mismatch.text
    forged = "6500d2c0." + "a" * 32 + "." + "b" * 32
    now = datetime.now(UTC)
    expired = csrf.new(identity, now - timedelta(hours=3))
    stranger = Identity(b"another desk's secret, not ours", "example.com")
    for token in (forged, expired, csrf.new(stranger, now), "", "x" * 5000):
        with desk.client() as client:
            client.cookies.set("mailgate_csrf", token)
            answer = client.post("/contact", data={"csrf_token": token, **fields()})
            assert answer.status_code == 403, (token[:40], answer.text)
    assert desk.tickets() == 0 and desk.inbound() == 0
    with desk.client() as client:  # the same post with the form's own token is filed: the test can pass
        assert post_contact(client).status_code == 303
    assert desk.tickets() == 1


def test_the_reply_form_needs_the_token_too(desk: Desk) -> None:
    number = file_ticket(desk)
    link = status_url(desk, number)
    with desk.client() as client:
        answer = client.post(path_of(link), data={"message": "Injected by another site"})
        assert answer.status_code == 403 and "security token" in answer.text
    assert kinds(desk, number) == ["customer"]


def test_the_hidden_field_filled_gets_thanks_but_nothing_is_filed(desk: Desk) -> None:
    with desk.client() as client:
        answer = post_contact(client, website="http://spam.example/cheap-pills")
        assert answer.status_code == 303
        thanks = client.get("/" + answer.headers["location"].lstrip("/"))
    assert thanks.status_code == 200 and "Your request has been received" in thanks.text
    assert "ticket <strong>" not in thanks.text
    assert desk.tickets() == 0 and desk.inbound() == 0
    assert "hidden field was filled" in desk.svc.output()


def test_the_thank_you_page_names_only_a_number_we_signed(desk: Desk) -> None:
    with desk.client() as client:
        page = client.get("/contact/thanks", params={"ticket": "999999", "sig": "a" * 32})
    assert page.status_code == 200 and "999999" not in page.text


# --------------------------------------------------------------------------- attackers: status links
def test_a_status_link_opens_its_own_ticket_and_no_other(desk: Desk) -> None:
    mine = file_ticket(desk, subject="Mine")
    theirs = file_ticket(desk, subject="Kim's secret project", email=KIM, name="Kim")
    link = status_url(desk, mine)
    token = link.rsplit("/", 1)[1]
    number_part, expiry, signature = token.split(".")
    flipped = signature[:-1] + ("a" if signature[-1] != "a" else "b")
    later = format(int(expiry, 16) + 10**7, "x")
    tries = [
        f"{b64(theirs)}.{expiry}.{signature}",  # A's signature on B's number
        f"{number_part}.{later}.{signature}",  # the expiry moved on
        f"{number_part}.{expiry}.{flipped}",  # one character of the signature
        f"{number_part}.{expiry}.{signature.upper()}",
        f"{b64(mine)}=.{expiry}.{signature}",
        token + "%0A", token + ".x", "garbage", "a" * 3000, "%00", "..%2f..%2fetc%2fpasswd",
    ]
    with desk.client() as client:
        assert client.get(path_of(link)).status_code == 200
        for bad in tries:
            answer = client.get(f"/status/{bad}")
            assert answer.status_code == 404, (bad, answer.text[:500])
            assert "Kim" not in answer.text and "secret project" not in answer.text
        # nor does a reply through an altered link reach the other ticket
        page = client.get(path_of(link))
        answer = client.post(f"/status/{tries[0]}", data={"csrf_token": csrf_of(page.text), "message": "Hijack"})
        assert_not_found(answer)
    assert kinds(desk, theirs) == ["customer"] and kinds(desk, mine) == ["customer"]


def test_an_expired_link_is_a_404(desk: Desk) -> None:
    number = file_ticket(desk)
    status_url(desk, number)  # the real one works (below) ...
    identity = desk.identity()
    past = status_link.token(identity, number, PAT, datetime.now(UTC) - timedelta(minutes=1))
    future = status_link.token(identity, number, PAT, datetime.now(UTC) + timedelta(days=1))
    with desk.client() as client:
        assert_not_found(client.get(f"/status/{past}"))
        assert client.get(f"/status/{future}").status_code == 200
        # made for another address than the requester's: even with the desk's key, it opens nothing
        kims = status_link.token(identity, number, KIM, datetime.now(UTC) + timedelta(days=1))
        assert_not_found(client.get(f"/status/{kims}"))


def test_a_link_stops_working_once_the_requester_is_erased(desk: Desk) -> None:
    number = file_ticket(desk)
    link = status_url(desk, number)
    with desk.client() as client:
        assert client.get(path_of(link)).status_code == 200
        done = run_cli(desk.svc.config, "forget", PAT)
        assert done.code == 0, done.stderr
        assert_not_found(client.get(path_of(link)))


def test_what_a_customer_typed_is_shown_as_text(desk: Desk) -> None:
    script = "<script>alert('subject')</script>"
    number = file_ticket(desk, subject=f"Broken {script}", name="<b>Pat</b>",
                         message="<img src=x onerror=alert(1)> and </textarea><script>alert(2)</script>")
    link = status_url(desk, number)
    with desk.client() as client:
        page = client.get(path_of(link))
    assert page.status_code == 200
    assert "<script" not in page.text and "<img" not in page.text and "<b>Pat" not in page.text
    assert "&lt;script&gt;alert(&#39;subject&#39;)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # and the form shown again keeps it as text too
    with desk.client() as client:
        again = post_contact(client, email="", subject=script, message="</textarea><script>alert(3)</script>")
    assert again.status_code == 422 and "<script" not in again.text


def test_an_internal_note_never_reaches_the_status_page(desk: Desk) -> None:
    number = file_ticket(desk)
    link = status_url(desk, number)
    agent_writes(desk, alert_for(desk, number), f"#note\n{NOTE}")
    wait_until(lambda: kinds(desk, number) == ["customer", "note"], what="the note", log=desk.svc.output)
    with desk.client() as client:
        page = client.get(path_of(link))
    assert page.status_code == 200 and "Help, it burns." in page.text
    assert "legacy firmware" not in page.text and "Jane" not in page.text


# --------------------------------------------------------------------------- attackers: sizes and rates
def test_files_too_large_or_too_many_are_refused_next_to_the_field(desk: Desk) -> None:
    big = ("attachments", ("big.bin", b"x" * (64 * 1024 + 1), "application/octet-stream"))
    small = [("attachments", (f"f{i}.txt", b"hello", "text/plain")) for i in range(3)]
    with desk.client() as client:
        too_large = post_contact(client, files=[big])
        too_many = post_contact(client, files=small)
        assert too_large.status_code == 422 and "big.bin is larger than 64 KiB" in too_large.text
        assert too_many.status_code == 422 and "at most 2 files" in too_many.text
        assert "Help, it burns." in too_many.text  # the rest as typed
        assert desk.tickets() == 0 and desk.inbound() == 0
        odd = [("attachments", ("a.txt", b"x", "text/plain\r\nBcc: x@evil.example")),
               ("attachments", ("b.bin", b"y", "image/svg\x0bxml; name=\"evil.exe\""))]
        header_trick = post_contact(client, files=odd)
    assert header_trick.status_code == 303  # an odd file type is just a file, and never a header of its own
    number = re.search(r"ticket=(\d+)", header_trick.headers["location"])
    assert number
    [message] = show(desk.svc, number.group(1))["messages"]
    assert [(a["filename"], a["content_type"]) for a in message["attachments"]] == [
        ("a.txt", "text/plain"), ("b.bin", "application/octet-stream")]
    assert not sql_rows(desk.svc.config, "SELECT id FROM participant WHERE email = 'x@evil.example'")


def test_a_body_over_the_servers_limit_is_a_413_page(make_config: MakeConfig, tmp_path: Path,
                                                     browser: webdriver.Chrome) -> None:
    desk = start_desk(make_config, tmp_path, {"max_attachment_size": "4MiB"}, max_request_size="256KiB")
    try:
        scan = tmp_path / "scan.pdf"
        scan.write_bytes(b"%PDF" + b"x" * 2_000_000)
        browser.get(f"{desk.base}/contact")
        wait_for(browser, lambda d: d.title == "Contact support", what="the contact form")
        browser.find_element(By.ID, "f-attachments").send_keys(str(scan))
        browser.find_element(By.TAG_NAME, "button").click()
        wait_for(browser, lambda d: d.title == "Too large", what="the 413 page in the browser (not a reset connection)")
        with desk.client() as client:
            page = client.get("/contact")
            data = {"csrf_token": csrf_of(page.text), **fields()}
            huge = [("attachments", ("scan.pdf", b"%PDF" + b"x" * 3_000_000, "application/pdf"))]
            answer = client.post("/contact", data=data, files=huge)
            assert answer.status_code == 413, answer.text
            assert answer.headers["content-type"].startswith("text/html") and "Too large" in answer.text
            long_text = client.post("/contact", data={**data, "message": "x" * 200_000})  # past what a field may be
            assert long_text.status_code == 413, long_text.text
            over = client.post("/contact", data={**data, "message": "x" * 20_001})  # past max_text: said at the field
            assert over.status_code == 422 and "at most 20000 characters" in over.text
            unknown = client.get("/contact/nothing-here")
            assert unknown.status_code == 404
        assert desk.tickets() == 0 and desk.inbound() == 0
    finally:
        desk.svc.stop()


def test_more_posts_than_the_rate_are_a_429(make_config: MakeConfig, tmp_path: Path) -> None:
    desk = start_desk(make_config, tmp_path, {"rate": "3/10m"})
    try:
        with desk.client() as client:
            answers = [post_contact(client, subject=f"Try {i}").status_code for i in range(4)]
            assert answers == [303, 303, 303, 429], answers
            limited = post_contact(client, subject="Try 5")
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
            assert "Too many requests" in limited.text
        assert desk.tickets() == 3
    finally:
        desk.svc.stop()


def test_a_held_ticket_gets_a_thank_you_without_a_number(make_config: MakeConfig, tmp_path: Path) -> None:
    port = free_port()
    config = make_config(agents=AGENTS, rules=RULES, sla=SLA, intake={"flood": {"per_sender": "1/1h"}},
                         http={"listen": f"127.0.0.1:{port}", "form": {"enabled": True}})
    svc = start_service(config, tmp_path / "serve.log")
    desk = Desk(svc, f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: _healthy(desk.base), what="the HTTP listener", log=svc.output)
        first = file_ticket(desk, subject="First")
        with desk.client() as client:
            second = post_contact(client, subject="Second, held by flood control")
            assert second.status_code == 303 and "ticket=" not in second.headers["location"]
        assert desk.tickets() == 1 and first
        # public_url unset: the link starts with the listen address
        assert status_url(desk, first).startswith(f"http://127.0.0.1:{port}/status/")
    finally:
        svc.stop()


def test_without_the_form_there_is_no_page_and_no_link(make_config: MakeConfig, tmp_path: Path) -> None:
    port = free_port()
    svc = start_service(make_config(agents=AGENTS, rules=RULES, sla=SLA, http={"listen": f"127.0.0.1:{port}"}),
                        tmp_path / "serve.log")
    try:
        wait_until(lambda: _healthy(f"http://127.0.0.1:{port}"), what="the HTTP listener", log=svc.output)
        assert httpx.get(f"http://127.0.0.1:{port}/contact", timeout=PATIENCE).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{port}/status/x.1.{'a' * 32}", timeout=PATIENCE).status_code == 404
        with svc.smtp() as smtp:
            smtp.sendmail(PAT, ["support@example.com"],
                          f"From: {PAT}\r\nTo: support@example.com\r\nSubject: By mail\r\n\r\nHello\r\n".encode())
        [ack] = wait_mail(svc, PAT, "By mail")
        assert "/status/" not in text_of(ack) and not mails_to(svc, PAT, "follow your request")
    finally:
        svc.stop()
    assert run_cli(svc.config, "check-config").code == 0


def test_malformed_posts_are_answered_with_a_page_never_a_500(desk: Desk) -> None:
    number = file_ticket(desk)
    link = path_of(status_url(desk, number))
    bodies = [
        ({"content-type": "multipart/form-data"}, b"no boundary at all"),
        ({"content-type": "multipart/form-data; boundary=xyz"}, b"--xyz\r\nContent-Disposition: form-data\r\n\r\nx"),
        ({"content-type": "multipart/form-data; boundary=xyz"}, b"\xff\xfe garbage"),
        ({"content-type": "application/x-www-form-urlencoded"}, b"message=%ZZ%&&=&csrf_token=%00"),
        ({"content-type": "application/x-www-form-urlencoded"}, "&".join(f"f{i}=x" for i in range(500)).encode()),
        ({"content-type": "application/json"}, b'{"message": "hi"}'),
        ({"content-type": "text/plain"}, b""),
    ]
    with desk.client() as client:
        for path in ("/contact", link):
            for headers, body in bodies:
                answer = client.post(path, content=body, headers=headers)
                assert answer.status_code in (400, 403, 413), (path, headers, body[:40], answer.status_code)
                assert answer.headers["content-type"].startswith("text/html")
        page = client.get(link)
        empty = client.post(link, data={"csrf_token": csrf_of(page.text), "message": "  "})
        assert empty.status_code == 422 and "Your message: required" in empty.text
        files = [("attachments", (f"f{i}.txt", b"x", "text/plain")) for i in range(3)]
        many = client.post(link, data={"csrf_token": csrf_of(page.text), "message": "three files"}, files=files)
        assert many.status_code == 422 and "at most 2 files" in many.text and "three files" in many.text
        assert client.put("/contact").status_code == 405 and client.get("/status/").status_code == 404
    assert kinds(desk, number) == ["customer"]
    assert " 500 " not in desk.svc.output() and "Traceback" not in desk.svc.output()
