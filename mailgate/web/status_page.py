"""A ticket's status page at ``/status/{token}``: its status and public thread, and a form to add to it.

The token is the acknowledgment's signed link (``status_link.py``); a token that does not open this
ticket for its requester, for whatever reason, is the same 404 as a path that does not exist. The
thread is ``thread.shown``: customer and agent messages, never internal notes. A reply is filed as
the requester, through the pipeline like their mail (``Submission(channel="form", client="status")``),
so a closed ticket reopens, or gets a follow-up, by the same rules as for mail.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from mailgate.errors import TempFail
from mailgate.intake import channel
from mailgate.pipeline.ingest import Context
from mailgate.pipeline.submission import Submission
from mailgate.storage.store import Store
from mailgate.web import csrf, posted, render, status_link, thread
from mailgate.web.runtime import Runtime, file
from mailgate.web.site import peer, received, runtime, secure, settings

router = APIRouter(include_in_schema=False)

STATUS_WORDS = {
    "open": "Open: we will answer you soon",
    "in_progress": "In progress: we are working on it",
    "awaiting_reply": "Waiting for your reply",
    "resolved": "Resolved: reply if it is not",
    "closed": "Closed",
}
SENT = {
    "1": "Thank you: your message was added to your request.",
    "held": "Thank you: your message was received and will be looked at.",
    "new": "Your earlier request was closed, so your message opened this new one.",
}


@dataclass(frozen=True)
class Entry:
    author: str
    mine: bool
    at: datetime
    body: str
    attachments: tuple[tuple[str, str], ...]  # (file name, size in words)


@dataclass(frozen=True)
class View:
    number: str
    tag: str
    subject: str
    status: str
    requester: channel.Person
    merged_into: str | None  # the subject tag of the ticket it was merged into
    merged_link: str | None  # the survivor's page, when it is this requester's too
    entries: tuple[Entry, ...]


def _link(ctx: Context, number: str, requester: str) -> str:
    expires = status_link.expiry(ctx.clock.now(), settings(ctx).status_link_valid)
    return status_link.token(ctx.identity, number, requester, expires)


def load(ctx: Context, token: str) -> View | None:
    """The ticket the token opens, as its requester may see it; None for any token that does not."""
    claim = status_link.read(token)
    if claim is None:
        return None
    with ctx.db.reader() as session:
        store = Store(session)
        ticket = store.ticket_by_number(claim.number)
        if ticket is None or not status_link.opens(ctx.identity, claim, ticket.requester_email, ctx.clock.now()):
            return None
        shown = thread.shown(store, ticket)
        link = None
        if shown.merged_into is not None:
            survivor = store.ticket_by_number(shown.merged_into)
            if survivor is not None and survivor.requester_email.lower() == ticket.requester_email.lower():
                link = _link(ctx, survivor.number, survivor.requester_email)
        entries = tuple(
            Entry(thread.author(m), m.kind == "customer" and m.from_email.lower() == ticket.requester_email.lower(),
                  m.created_at, m.body, tuple((a.filename, render.human_size(a.size)) for a in m.attachments))
            for m in shown.messages
        )
        merged = ctx.tag.tag(shown.merged_into) if shown.merged_into else None
        status = f"Closed: merged into {merged}" if merged else STATUS_WORDS.get(ticket.status, ticket.status)
        return View(ticket.number, ctx.tag.tag(ticket.number), ticket.subject, status,
                    channel.Person(ticket.requester_email, ticket.requester_name), merged, link, entries)


async def _view(ctx: Context, token: str) -> View | None:
    return await asyncio.to_thread(load, ctx, token)


def _page(request: Request, ctx: Context, view: View, *, status: int = 200, notice: str | None = None,
          error: str | None = None, text: str = "", headers: dict[str, str] | None = None) -> Response:
    http = settings(ctx)
    token = csrf.for_page(request, ctx.identity, ctx.clock.now(), secure(http))
    response = render.page(
        "status.html", status, headers, title=f"{view.tag} {view.subject}", view=view, notice=notice, error=error,
        text=text, csrf_field=csrf.FIELD, csrf_token=token, max_attachments=http.form.max_attachments,
        max_size=render.human_size(http.form.max_attachment_size),
    )
    return csrf.set_cookie(response, token, secure(http))


@router.get("/status/{token}")
async def status(request: Request, token: str, sent: str = "") -> Response:
    ctx = runtime(request).context()
    try:
        view = await _view(ctx, token)
    except SQLAlchemyError:
        return render.error(503, headers={"Retry-After": "60"})
    if view is None:
        return render.error(404)
    return _page(request, ctx, view, notice=SENT.get(sent))


@router.post("/status/{token}")
async def reply(request: Request, token: str) -> Response:
    rt = runtime(request)
    ctx = rt.context()
    http = settings(ctx)
    sent = await received(request, http)
    if isinstance(sent, Response):
        return sent
    try:
        view = await _view(ctx, token)
        if view is None:
            return render.error(404)
        return await _reply(request, rt, ctx, token, view, sent)
    except SQLAlchemyError:
        return render.error(503, headers={"Retry-After": "60"})
    finally:
        await posted.close(sent)


async def _reply(request: Request, rt: Runtime, ctx: Context, token: str, view: View, sent: posted.Posted) -> Response:
    http = settings(ctx)
    text = sent.text("message")
    bad = csrf.problem(request, sent.text(csrf.FIELD), ctx.identity, ctx.clock.now(), secure(http))
    if bad is not None:
        return _page(request, ctx, view, status=403, error=bad, text=text)
    try:
        body = posted.message(text, http)
        files = await posted.uploads(sent, http)
        entry = channel.Entry(view.requester, body, Submission(channel="form", client="status", ticket=view.number),
                              attachments=files)
        filed = await file(rt, entry, "form", peer(request))
    except channel.Invalid as exc:
        said = {"body": "Your message", "attachments": "Attachments"}.get(exc.field, exc.field)
        return _page(request, ctx, view, status=422, error=f"{said}: {exc.message}", text=text)
    except TempFail:
        return _page(request, ctx, view, status=503, text=text, headers={"Retry-After": "60"},
                     error="We cannot store your message right now; nothing was kept. Please send it again "
                           "in a minute.")
    if filed.refusal == "not_found":
        return render.error(404)
    if filed.status == "refused":
        return _page(request, ctx, view, status=422, error=filed.reason or "Your message was not accepted.", text=text)
    if filed.number is None:
        return _back(f"{token}?sent=held")
    if view.merged_into is not None:  # it went to the ticket this one was merged into: shown there, if theirs
        return _back(f"{view.merged_link or token}?sent=1")
    if filed.number != view.number:  # a follow-up of a ticket closed longer than the reopen window
        return _back(f"{_link(ctx, filed.number, view.requester.email)}?sent=new")
    return _back(f"{token}?sent=1")


def _back(location: str) -> Response:
    """A status page, by a path relative to this one (so it works behind a proxy's path prefix too)."""
    return RedirectResponse(location, 303, headers=render.HEADERS)
