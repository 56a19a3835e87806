"""Who is calling the API, and whether they may: the key, its rate, its scopes.

In this order, before the body is read: a missing or unknown key is 401 and counts as a failed login
of the client's address, and once the address is over its allowance it is 429 instead; a known key
over its rate is 429; a key without the scope the endpoint needs is 403. A key is sent as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from mailgate.web import keys, ratelimit
from mailgate.web.problems import Problem
from mailgate.web.runtime import Runtime

bearer = HTTPBearer(auto_error=False, bearerFormat="mg_...",
                    description="A key from `mailgate api-key new NAME`, as `Authorization: Bearer KEY`.")
header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key in `X-API-Key`.")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mailgate"'}


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


async def caller(request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
                 api_key: Annotated[str | None, Security(header_key)]) -> keys.Caller:
    limits = ratelimit.limits(request.app.state)
    presented = credentials.credentials if credentials is not None else api_key
    runtime: Runtime = request.app.state.runtime
    http = runtime.context().config.main.http
    found = keys.find(http.api_keys if http is not None else [], presented or "")
    if found is None:
        address = client_address(request)
        wait = limits.failures.take(address, ratelimit.FAILED_LOGINS)
        if wait:
            raise Problem(429, "too-many-failed-logins",
                          "too many requests without a valid API key from this address; try again later",
                          headers=retry_after(wait))
        said = "an unknown API key" if presented else "no API key (send Authorization: Bearer KEY)"
        raise Problem(401, "unauthorized", f"the request has {said}", headers=CHALLENGE)
    wait = limits.keys.take(found.name, found.rate)
    if wait:
        raise Problem(429, "rate-limited", f"the key {found.name} is over its rate of {found.rate.text}",
                      headers=retry_after(wait))
    return found


def scoped(*scopes: str) -> Callable[..., Awaitable[keys.Caller]]:
    """A dependency: the caller, if its key has one of ``scopes`` (else 403)."""

    async def check(who: Annotated[keys.Caller, Depends(caller)]) -> keys.Caller:
        if not who.may(*scopes):
            raise Problem(403, "forbidden", f"the key {who.name} has no scope {' or '.join(scopes)} "
                                            f"(it has {', '.join(sorted(who.scopes))})")
        return who

    return check


Creator = Annotated[keys.Caller, Depends(scoped("create", "agent"))]
Reader = Annotated[keys.Caller, Depends(scoped("read", "agent"))]
