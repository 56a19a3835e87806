"""The HTTP API: open tickets, add messages, read a ticket. Thin adapters onto ``intake/channel.py``.

A request becomes the mail its customer (or agent) would have written and goes through the pipeline
like mail, so rules, SLA, dedupe, holds and acknowledgments are the same, and a 201 is said only after
the commit. What the key may do is decided here (``auth.py``); who may write on a ticket, by the
pipeline (a ``from`` who is neither the requester nor a collaborator is refused, 403).

Answers: 201 created or added (a replay of the same request with the same ``Idempotency-Key`` too,
with ``Idempotent-Replayed: true``); 202 held (spam, flood control or a rule set it aside); 404 no such
ticket; 403 not a participant; 422 bad input, and the same ``Idempotency-Key`` with another request
(as the IETF draft says: the key is unprocessable with that content).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse, Response

from mailgate.intake import channel
from mailgate.storage.store import Store
from mailgate.web import api_models as models
from mailgate.web import idempotency, thread
from mailgate.web.auth import Creator, Reader
from mailgate.web.bodies import field_problem, read
from mailgate.web.entries import message_entry, ticket_entry
from mailgate.web.keys import Caller
from mailgate.web.problems import Problem
from mailgate.web.runtime import Runtime, file

router = APIRouter(prefix="/api/v1", tags=["tickets"])

IdempotencyKey = Annotated[str | None, Header(
    alias=idempotency.HEADER, max_length=idempotency.MAX_LENGTH, pattern=idempotency.PATTERN,
    description="a retry with the same key and request answers the first result; another request: 422")]
Number = Annotated[str, Path(max_length=65, pattern=r"^#?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                             description="the ticket number, as in the subject tag")]
REFUSED = {"not_found": (404, "no-such-ticket"), "forbidden": (403, "not-a-participant"),
           "conflict": (422, "idempotency-key-reused"), "invalid": (422, "refused")}
_HEADERS = {"Location": {"description": "the ticket", "schema": {"type": "string"}},
            idempotency.REPLAYED: {"description": "true: the answer to an earlier request with this key",
                                   "schema": {"type": "string"}}}


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _limit(runtime: Runtime) -> int:
    http = runtime.context().config.main.http
    return http.max_request_size if http is not None else 10 * 2**20


async def _filed(request: Request, who: Caller, entry: channel.Entry) -> channel.Filed:
    runtime = _runtime(request)
    peer = request.client.host if request.client else ""
    async with idempotency.locks(request.app.state).held(who.name, entry.idempotency_key):
        try:
            return await file(runtime, entry, "api", peer)
        except channel.Invalid as exc:
            raise field_problem(exc.field, exc.message) from None


def _answer(filed: channel.Filed, url: str | None) -> Response:
    headers = {idempotency.REPLAYED: "true"} if filed.status == "duplicate" else {}
    if filed.status == "refused":
        status, kind = REFUSED[filed.refusal or "invalid"]
        raise Problem(status, kind, filed.reason or "refused", headers=headers)
    if filed.number is None:  # held, or the replay of a request that was held
        return JSONResponse({"status": "held", "reason": filed.reason, "message_id": filed.message_id},
                            status_code=202, headers=headers)
    data: dict[str, Any] = {"number": filed.number, "message_id": filed.message_id}
    if url is None:
        data["status"] = "added"
    else:
        data["status"] = "created" if filed.status != "added" else "added"
        data["url"] = headers["Location"] = url.format(number=filed.number)
    return JSONResponse(data, status_code=201, headers=headers)


@router.post(
    "/tickets", summary="Open a ticket", status_code=201, response_model=None,
    responses={201: {"model": models.Created, "headers": _HEADERS}, 202: {"model": models.Held},
               **models.POST_ERRORS},
    openapi_extra=models.request_body(models.NewTicket),
)
async def open_ticket(request: Request, who: Creator, idempotency_key: IdempotencyKey = None) -> Response:
    """A new ticket for ``requester``, acknowledged to them as a mail's would be. With an agent key,
    staff entering a call: ``channel`` (default phone), ``ack: false`` for no acknowledgment."""
    runtime = _runtime(request)
    given, uploads = await read(request, models.NewTicket, _limit(runtime))
    entry = ticket_entry(given, uploads, who, runtime.context(), idempotency_key)
    return _answer(await _filed(request, who, entry), "/api/v1/tickets/{number}")


@router.post(
    "/tickets/{number}/messages", summary="Add a message to a ticket", status_code=201, response_model=None,
    responses={201: {"model": models.Added, "headers": {idempotency.REPLAYED: _HEADERS[idempotency.REPLAYED]}},
               202: {"model": models.Held}, **models.POST_ERRORS, **models.NOT_FOUND},
    openapi_extra=models.request_body(models.NewMessage),
)
async def add_message(request: Request, number: Number, who: Creator,
                      idempotency_key: IdempotencyKey = None) -> Response:
    """The customer's message (``from``: the requester or a collaborator), or, with an agent key, the
    agent's reply (``#commands`` work as by mail) or internal note (``note: true``)."""
    runtime = _runtime(request)
    given, uploads = await read(request, models.NewMessage, _limit(runtime))
    entry = message_entry(_normal(number), given, uploads, who, runtime.context(), idempotency_key)
    return _answer(await _filed(request, who, entry), None)


@router.get(
    "/tickets/{number}", summary="A ticket and its thread", response_model=None,
    responses={200: {"model": models.TicketOut}, **models.ERRORS, **models.NOT_FOUND},
)
async def get_ticket(request: Request, number: Number, who: Reader) -> Response:
    """Its status and public thread; an agent key sees internal notes too."""
    runtime = _runtime(request)
    shown = await asyncio.to_thread(_read, runtime, _normal(number), who.is_agent)
    if shown is None:
        raise Problem(404, "no-such-ticket", f"no ticket {number}")
    return JSONResponse(shown)


def _normal(number: str) -> str:
    return number.strip().lstrip("#")


def _read(runtime: Runtime, number: str, notes: bool) -> dict[str, Any] | None:
    with runtime.context().db.reader() as session:
        store = Store(session)
        ticket = store.ticket_by_number(number) or store.ticket_by_number(number.upper())
        return None if ticket is None else thread.as_json(thread.shown(store, ticket, notes=notes))
