"""The test browser works end to end: a form filled in from the keyboard reaches a real HTTP server,
and the label check tells a labelled form from one a screen reader could not read out.

The pages come from a ``http.server`` on loopback, so these tests need nothing of mailgate's and
show the browser itself is sound before the daemon's own pages are tested with it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from selenium import webdriver
from selenium.webdriver.common.keys import Keys

from tests.support.browser import focused_name, press, unlabelled_inputs, wait_for

HEAD = '<!doctype html><html lang="en"><head><meta charset="utf-8">' \
       '<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head><body>'

CONTACT = HEAD.format(title="Contact support") + """
<form method="post" action="/submit">
  <label for="name">Your name</label> <input id="name" name="name" autocomplete="name">
  <label>Your email <input type="email" name="email" autocomplete="email"></label>
  <label for="subject">Subject</label> <input id="subject" name="subject">
  <button type="submit">Send</button>
</form></body></html>"""

THANKS = HEAD.format(title="Thanks") + "<p>We got your message.</p></body></html>"

# Every way a control can be named, and controls that need no label; nothing here may be reported.
LABELLED = HEAD.format(title="Labelled") + """
<form>
  <label for="a">A</label><input id="a" name="a">
  <label>B <input name="b"></label>
  <input name="c" aria-label="C">
  <span id="d-label">D</span><input name="d" aria-labelledby="d-label">
  <label for="topic">Topic</label><select id="topic" name="topic"><option>Billing</option></select>
  <label for="body">Message</label><textarea id="body" name="body"></textarea>
  <input type="hidden" name="token" value="x">
  <input name="trap" style="display:none">
  <input type="submit" value="Send">
</form></body></html>"""

# One labelled field and four that only look labelled: a placeholder, a title, an empty label and an
# aria-labelledby pointing at nothing do not name a control for a screen reader.
UNLABELLED = HEAD.format(title="Unlabelled") + """
<form>
  <label for="ok">Fine</label><input id="ok" name="ok">
  <input name="email" placeholder="Your email">
  <input name="phone" title="Phone">
  <label for="empty"> </label><textarea id="empty" name="body"></textarea>
  <input name="city" aria-labelledby="no-such-id">
</form></body></html>"""


@dataclass
class PageServer:
    """A loopback HTTP server with fixed pages, keeping the form posts it receives."""

    pages: dict[str, str]
    posts: queue.Queue[dict[str, list[str]]] = field(default_factory=queue.Queue)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def page_server(pages: dict[str, str]) -> Iterator[PageServer]:
    """Serve ``pages`` (path -> HTML) on a port the kernel binds at once, so nobody can take it between."""
    site = PageServer(pages)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = site.pages.get(self.path)
            self._answer(200 if page is not None else 404, page or "not found")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            site.posts.put(parse_qs(body, keep_blank_values=True))
            self._answer(200, THANKS)

        def _answer(self, status: int, html: str) -> None:
            data = html.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="test-page-server")
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(60)


def test_a_form_filled_in_from_the_keyboard_reaches_the_server(browser: webdriver.Chrome) -> None:
    with page_server({"/": CONTACT}) as site:
        browser.get(site.url("/"))
        wait_for(browser, lambda d: d.title == "Contact support", what="the contact page")
        typed = {"name": "Pat Doe", "email": "pat@customer.example", "subject": "Printer on fire"}
        for name, text in typed.items():
            press(browser, Keys.TAB)
            assert focused_name(browser) == name, "TAB should move through the fields in reading order"
            press(browser, text)
        press(browser, Keys.ENTER)

        wait_for(browser, lambda d: d.title == "Thanks", what="the page after sending")
        post = site.posts.get(timeout=60)
        assert post == {key: [value] for key, value in typed.items()}
        assert site.posts.empty(), "the form was sent once"


def test_the_label_check_reports_unnamed_controls_and_only_those(browser: webdriver.Chrome) -> None:
    with page_server({"/labelled": LABELLED, "/unlabelled": UNLABELLED}) as site:
        browser.get(site.url("/labelled"))
        wait_for(browser, lambda d: d.title == "Labelled", what="the labelled page")
        assert unlabelled_inputs(browser) == []

        browser.get(site.url("/unlabelled"))
        wait_for(browser, lambda d: d.title == "Unlabelled", what="the unlabelled page")
        assert unlabelled_inputs(browser) == [
            "input[name=email]", "input[name=phone]", "textarea#empty[name=body]", "input[name=city]",
        ]


@pytest.mark.parametrize("browser", ["phone"], indirect=True)
def test_the_phone_window_lays_pages_out_at_phone_width(browser: webdriver.Chrome) -> None:
    with page_server({"/": CONTACT}) as site:
        browser.get(site.url("/"))
        wait_for(browser, lambda d: d.title == "Contact support", what="the contact page")
        assert browser.execute_script("return [window.innerWidth, navigator.maxTouchPoints > 0]") == [390, True]
