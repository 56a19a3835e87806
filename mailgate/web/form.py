"""The contact form at ``/contact``: a ticket from a web page, made exactly as a mail would make it.

What the customer typed is checked with the channel's helpers and composed into the mail they would
have written (``intake/channel.py``); it goes through the same writer, rules, SLA and notifications
as SMTP mail, as ``Submission(channel="form", client="form")``. The acknowledgment carries the
signed link to the ticket's status page (``status_page.py``).

Kept out: a post without our CSRF token (``csrf.py``), more posts from one address than
``http.form.rate`` allows (429), and bots, by a field people never see (``website``): a post that
fills it gets the same thank-you page but is not filed, only logged (the pipeline has no way of
holding a mail its channel already knows to be spam, and a bot's text is not worth keeping).
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from mailgate.config.http import Http
from mailgate.errors import TempFail
from mailgate.intake import channel
from mailgate.pipeline.ingest import Context
from mailgate.pipeline.submission import Submission
from mailgate.web import csrf, posted, render, status_page
from mailgate.web.runtime import Runtime, file
from mailgate.web.site import peer, received, runtime, secure, settings

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
router.include_router(status_page.router)

HONEYPOT = "website"
FIELDS = ("name", "email", "subject", "message", "topic")
MAX_NAME = 200
# the channel's name of a field -> the form's
SHOWN_AS = {"requester": "email", "body": "message", "help_topic": "topic", "attachments": "attachments"}
LABELS = {"name": "Your name", "email": "Your email address", "subject": "Subject", "message": "Your message",
          "topic": "Topic", "attachments": "Attachments"}
THANKS = "thanks"
T = TypeVar("T")


def _one_line(text: str) -> str:
    """A name for the From header: no control characters (a CR or LF would start a header of its own)."""
    return " ".join("".join(" " if unicodedata.category(c)[0] == "C" else c for c in text).split())


def _form(request: Request, ctx: Context, values: dict[str, str], errors: dict[str, str], status: int = 200,
          notice: str | None = None, headers: dict[str, str] | None = None) -> Response:
    """The form, with what was typed and what was wrong with it; every showing renews the CSRF cookie."""
    http = settings(ctx)
    token = csrf.for_page(request, ctx.identity, ctx.clock.now(), secure(http))
    limits = http.form
    chosen = values.get("topic", limits.help_topic or "") if values else (limits.help_topic or "")
    response = render.page(
        "contact.html", status, headers, title=limits.title, values=values, errors=errors, labels=LABELS,
        notice=notice, topics=[t.name for t in ctx.config.rules.help_topics], chosen=chosen, csrf_field=csrf.FIELD,
        csrf_token=token, honeypot=HONEYPOT, max_attachments=limits.max_attachments,
        max_size=render.human_size(limits.max_attachment_size), max_text=limits.max_text,
    )
    return csrf.set_cookie(response, token, secure(http))


@router.get("/contact")
async def contact(request: Request) -> Response:
    return _form(request, runtime(request).context(), {}, {})


def _attempt(errors: dict[str, str], check: Callable[[], T], default: T) -> T:
    """``check()``, or ``default`` with its error kept under the field it names (as the form calls it)."""
    try:
        return check()
    except channel.Invalid as exc:
        errors[SHOWN_AS.get(exc.field, exc.field)] = exc.message
        return default


def _address(text: str) -> str:
    if not text.strip():
        raise channel.Invalid("email", "required")
    return channel.person(text, "email").email


def _name(text: str) -> str:
    name = _one_line(text)
    if len(name) > MAX_NAME:
        raise channel.Invalid("name", f"at most {MAX_NAME} characters")
    return name


def _checked(values: dict[str, str], http: Http, topics: set[str]) -> tuple[channel.Person, str, str, dict[str, str]]:
    """The person, subject and message, each checked on its own so that every error is shown at once."""
    errors: dict[str, str] = {}
    email = _attempt(errors, lambda: _address(values["email"]), "")
    name = _attempt(errors, lambda: _name(values["name"]), "")
    subject = _attempt(errors, lambda: channel.subject(values["subject"], required=True), "")
    body = _attempt(errors, lambda: posted.message(values["message"], http), "")
    if values["topic"] and values["topic"] not in topics:
        errors["topic"] = "choose one of the listed topics"
    return channel.Person(email, name), subject, body, errors


@router.post("/contact")
async def send(request: Request) -> Response:
    rt = runtime(request)
    ctx = rt.context()
    http = settings(ctx)
    sent = await received(request, http)
    if isinstance(sent, Response):
        return sent
    try:
        return await _send(request, rt, ctx, http, sent)
    finally:
        await posted.close(sent)


async def _send(request: Request, rt: Runtime, ctx: Context, http: Http, sent: posted.Posted) -> Response:
    values = {name: sent.text(name) for name in FIELDS}
    bad = csrf.problem(request, sent.text(csrf.FIELD), ctx.identity, ctx.clock.now(), secure(http))
    if bad is not None:
        return _form(request, ctx, values, {}, 403, notice=bad)
    if sent.text(HONEYPOT).strip():
        log.info("web form: the hidden field was filled by %s: not filed", peer(request) or "a client")
        return RedirectResponse(f"contact/{THANKS}", 303, headers=render.HEADERS)
    who, subject, body, errors = _checked(values, http, {t.name for t in ctx.config.rules.help_topics})
    files: tuple[channel.Upload, ...] = ()
    try:
        files = await posted.uploads(sent, http)
    except channel.Invalid as exc:
        errors[exc.field] = exc.message
    if errors:
        return _form(request, ctx, values, errors, 422)
    entry = channel.Entry(who, body, Submission(channel="form", client="form",
                                                help_topic=values["topic"] or http.form.help_topic),
                          subject=subject, attachments=files)
    try:
        filed = await file(rt, entry, "form", peer(request))
    except channel.Invalid as exc:
        return _form(request, ctx, values, {SHOWN_AS.get(exc.field, exc.field): exc.message}, 422)
    except TempFail:
        return _form(request, ctx, values, {}, 503, headers={"Retry-After": "60"},
                     notice="We cannot store your request right now; nothing was kept. Please send it again "
                            "in a minute.")
    if filed.status == "refused":
        return _form(request, ctx, values, {}, 422, notice=filed.reason or "Your request was not accepted.")
    if filed.number is None:  # held (flood control): kept for the agents to look at, no number to give
        return RedirectResponse(f"contact/{THANKS}", 303, headers=render.HEADERS)
    query = urlencode({"ticket": filed.number, "sig": ctx.identity.sign_link(THANKS, filed.number)})
    return RedirectResponse(f"contact/{THANKS}?{query}", 303, headers=render.HEADERS)


@router.get("/contact/thanks")
async def thanks(request: Request, ticket: str = "", sig: str = "") -> Response:
    """The number only with our signature on it: nobody can make this page say another."""
    ctx = runtime(request).context()
    number = ticket if ticket and sig and ctx.identity.verify_link(sig, THANKS, ticket) else None
    return render.page("thanks.html", title=settings(ctx).form.title, number=number,
                       tag=ctx.tag.tag(number) if number else None)
