"""The ASGI application: the API and the contact form behind one size limit and one error shape.

Nothing a caller sends gets a bare 500: validation errors, unknown paths and methods, bodies over
``http.max_request_size`` and a database that does not answer all become problem JSON (API) with the
right status; a database outage is a 503 with ``Retry-After``, since nothing was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailgate import __version__
from mailgate.errors import TempFail
from mailgate.web import problems
from mailgate.web.runtime import Runtime

log = logging.getLogger(__name__)
RETRY_AFTER = "30"


class BodyLimit:
    """Refuse a body over ``limit`` bytes with 413, by its Content-Length or while it streams in, so a
    large upload is never read whole into memory first."""

    def __init__(self, app: ASGIApp, limit: int, page: Callable[[], Response] | None = None) -> None:
        self.app, self.limit = app, limit
        self.page = page  # the web pages' own 413 page, for a browser's post (paths outside /api/)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    if message.get("more_body", False):
                        await _drain(receive)
                    raise problems.Problem(413, "too-large", self._detail(), headers={"Connection": "close"})
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"the request is larger than the {self.limit} bytes this server takes (http.max_request_size)"

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        if headers.get(b"expect", b"").lower() != b"100-continue":  # that client waits: it has sent nothing
            await _drain(receive)  # one still sending when the connection closes sees a reset, not the answer
        if self.page is not None and not str(scope.get("path", "")).startswith("/api/"):
            answer = self.page()
            answer.headers["Connection"] = "close"
        else:
            answer = problems.response(413, "too-large", self._detail(), headers={"Connection": "close"})
        await answer(scope, receive, send)


async def _drain(receive: Receive, most: int = 64 * 2**20, seconds: float = 15.0) -> None:
    """Read and drop a body (within bounds) before answering: a browser or HTTP client that is still
    sending when the connection closes sees a connection error instead of the answer saying what was wrong."""
    seen = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while seen <= most:
                message = await receive()
                seen += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return


def build_app(runtime: Runtime, max_request_size: int, *, form: bool) -> ASGIApp:
    """``form``: also serve the contact form and the status page (``http.form.enabled``)."""
    from mailgate.web import api

    app = FastAPI(title="mailgate", version=__version__, openapi_url="/api/v1/openapi.json", docs_url=None,
                  redoc_url=None, description="Tickets by HTTP: the same pipeline, rules, SLA and mail as email.")
    app.state.runtime = runtime
    app.include_router(api.router)
    page: Callable[[], Response] | None = None
    if form:
        from mailgate.web import form as contact
        from mailgate.web import render

        app.include_router(contact.router)
        page = lambda: render.error(413)  # noqa: E731

    @app.exception_handler(problems.Problem)
    async def _problem(request: Request, exc: problems.Problem) -> Response:
        return problems.response(exc.status, exc.kind, exc.detail, instance=request.url.path, errors=exc.errors,
                                 headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "body", "message": e.get("msg", "")}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "the request is not valid"
        return problems.response(422, "invalid", detail, instance=request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http")
        return problems.response(exc.status_code, kind, str(exc.detail), instance=request.url.path,
                                 headers=dict(exc.headers or {}))

    @app.exception_handler(TempFail)
    async def _tempfail(request: Request, exc: TempFail) -> Response:
        return problems.response(503, "unavailable", f"try again later: {exc}", instance=request.url.path,
                                 headers={"Retry-After": RETRY_AFTER})

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> Response:
        log.warning("HTTP %s %s: database error: %s", request.method, request.url.path, exc)
        return problems.response(503, "unavailable", "the database does not answer; try again later",
                                 instance=request.url.path, headers={"Retry-After": RETRY_AFTER})

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("HTTP %s %s failed", request.method, request.url.path)
        return problems.response(500, "internal", "an internal error; it is logged", instance=request.url.path)

    @app.get("/healthz", include_in_schema=False)
    async def _health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return BodyLimit(app, max_request_size, page)


def app_of(asgi: Any) -> FastAPI:
    """The FastAPI app inside the size limit (tests, the OpenAPI document)."""
    inner = asgi.app if isinstance(asgi, BodyLimit) else asgi
    assert isinstance(inner, FastAPI)
    return inner
