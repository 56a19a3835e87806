"""What the contact form and the status page share: the daemon's current parts, the ``http`` settings
they were served under, who is asking, and how often they may post.

Both forms count against one ``http.form.rate`` per client address: a filed reply costs the desk
what a filed ticket does. The address is the peer of the connection; behind a reverse proxy that is
the proxy's, so such a desk limits at the proxy too (forwarded headers are anyone's to write).
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import Response

from mailgate.config.http import Http
from mailgate.pipeline.ingest import Context
from mailgate.web import posted, render
from mailgate.web.runtime import Runtime
from mailgate.web.throttle import Throttle

log = logging.getLogger(__name__)


def runtime(request: Request) -> Runtime:
    found = request.app.state.runtime
    assert isinstance(found, Runtime)
    return found


def settings(ctx: Context) -> Http:
    http = ctx.config.main.http
    assert http is not None  # these pages are served only by http's listener
    return http


def secure(http: Http) -> bool:
    """Customers reach us over https: the cookies say ``Secure``."""
    return http.base_url.startswith("https://")


def peer(request: Request) -> str:
    return request.client.host if request.client else ""


def throttled(request: Request, http: Http) -> Response | None:
    """The 429 page when this address has posted ``http.form.rate`` times in its window, else None."""
    state = request.app.state
    if getattr(state, "form_throttle", None) is None:
        state.form_throttle = Throttle()
    rung = http.form.rate
    wait = state.form_throttle.take(peer(request), rung.count, rung.within.total_seconds())
    if wait is None:
        return None
    log.info("web form: %s posted more than %s; answered 429", peer(request) or "a client", rung.text)
    return render.error(429, headers={"Retry-After": str(int(wait) + 1)})


async def received(request: Request, http: Http) -> posted.Posted | Response:
    """A post's fields and files, or the page to answer instead: over the rate, or unreadable."""
    refused = throttled(request, http)
    if refused is not None:
        return refused
    try:
        return await posted.read(request, http)
    except posted.Unreadable as exc:
        return render.error(exc.status)
