"""CSRF tokens for the contact form and the status page's reply form: signed, double-submitted, expiring.

The token is ``<issued>.<nonce>.<signature>``: when it was made (Unix seconds in hex), 16 random
bytes, and the desk's HMAC over both (``Identity.sign_link``). A page with a form puts it in a hidden
field and in a cookie (``SameSite=Strict``, ``HttpOnly``, ``Secure`` behind https); a post is taken
only when the field and the cookie are the same token, the signature is ours and it is less than
``VALID`` old. Another site can make a browser post to us but can neither read our cookie nor set
one for our host that we would sign, and a strict cookie is not even sent with its post.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta

from fastapi import Request, Response

from mailgate.identity import Identity

PURPOSE = "csrf"
FIELD = "csrf_token"
VALID = timedelta(hours=2)
RENEW = timedelta(minutes=30)  # a page shown with less than this left gets a fresh token
SKEW = 60  # seconds a token may seem to come from the future (clocks of two daemons on one database)
_TOKEN = re.compile(r"^([1-9a-f][0-9a-f]{0,11})\.([0-9a-f]{32})\.([a-z2-7]{32})$")


def cookie_name(secure: bool) -> str:
    """``__Host-`` binds the cookie to this host and path ``/`` in the browser; it needs ``Secure``."""
    return "__Host-mailgate_csrf" if secure else "mailgate_csrf"


def _issued(token: str, identity: Identity) -> int | None:
    m = _TOKEN.fullmatch(token)
    if m is None:
        return None
    issued = int(m.group(1), 16)
    return issued if identity.verify_link(m.group(3), PURPOSE, issued, m.group(2)) else None


def new(identity: Identity, now: datetime) -> str:
    issued, nonce = int(now.timestamp()), secrets.token_hex(16)
    return f"{issued:x}.{nonce}.{identity.sign_link(PURPOSE, issued, nonce)}"


def _age(token: str, identity: Identity, now: datetime) -> float | None:
    issued = _issued(token, identity)
    if issued is None:
        return None
    age = now.timestamp() - issued
    return age if -SKEW <= age <= VALID.total_seconds() else None


def for_page(request: Request, identity: Identity, now: datetime, secure: bool) -> str:
    """The token for a page with a form: the browser's own while it has long enough to live, so pages
    open in two tabs both work; else a new one (``set_cookie`` gives it to the browser)."""
    held = request.cookies.get(cookie_name(secure), "")
    age = _age(held, identity, now)
    if age is not None and age < (VALID - RENEW).total_seconds():
        return held
    return new(identity, now)


def set_cookie(response: Response, token: str, secure: bool) -> Response:
    response.set_cookie(cookie_name(secure), token, max_age=int(VALID.total_seconds()), path="/", secure=secure,
                        httponly=True, samesite="strict")
    return response


def problem(request: Request, given: str, identity: Identity, now: datetime, secure: bool) -> str | None:
    """Why the post's token is not taken, in words for the page; None when it is."""
    held = request.cookies.get(cookie_name(secure), "")
    if not given or not held:
        return "Your browser did not send the form's security token (are cookies blocked?). Please send it again."
    if not secrets.compare_digest(given.encode("utf-8", "surrogateescape"), held.encode("utf-8", "surrogateescape")):
        return "The form's security token does not match. Please send it again."
    if _age(given, identity, now) is None:
        return "The form was open too long and has expired. Please send it again."
    return None
