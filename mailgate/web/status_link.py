"""The signed link to a ticket's status page: ``{base_url}/status/{token}``.

The token is ``<number>.<expiry>.<signature>``: the ticket number (base64url, since a number format
may hold any character), the Unix time it stops working (hex), and the desk's HMAC over the
number, the requester's address and that time. The address is signed but not written in the link,
so a link forwarded or logged does not say whose it is, and it is checked against the ticket's
requester *now*: a link opens one ticket only, and stops working when the requester changes
(``mailgate forget`` replaces the address). Whatever is wrong with a token, the page is the same 404.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailgate.config.http import Http
from mailgate.identity import Identity

PURPOSE = "status"
_TOKEN = re.compile(r"^([A-Za-z0-9_-]{1,64})\.([1-9a-f][0-9a-f]{0,11})\.([a-z2-7]{32})$")

# what the acknowledgment calls: (ticket number, requester's address, now) -> the link
Maker = Callable[[str, str, datetime], str]


@dataclass(frozen=True)
class Claim:
    """What a well-formed token says, before it is checked against the ticket."""

    number: str
    expires: int
    signature: str


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def token(identity: Identity, number: str, requester: str, expires: datetime) -> str:
    at = int(expires.timestamp())
    return f"{_b64(number)}.{at:x}.{identity.sign_link(PURPOSE, number, requester.lower(), at)}"


def url(base_url: str, identity: Identity, number: str, requester: str, expires: datetime) -> str:
    return f"{base_url.rstrip('/')}/status/{token(identity, number, requester, expires)}"


def read(text: str) -> Claim | None:
    """The claim of a token that has the right shape; None for anything else."""
    m = _TOKEN.fullmatch(text)
    number = _unb64(m.group(1)) if m else None
    if m is None or number is None:
        return None
    return Claim(number, int(m.group(2), 16), m.group(3))


def opens(identity: Identity, claim: Claim, requester: str, now: datetime) -> bool:
    """The token is the desk's, not expired, and made for this ticket's current requester."""
    if claim.expires <= now.timestamp():
        return False
    return identity.verify_link(claim.signature, PURPOSE, claim.number, requester.lower(), claim.expires)


def expiry(now: datetime, valid: timedelta) -> datetime:
    return (now if now.tzinfo else now.replace(tzinfo=UTC)) + valid


@dataclass(frozen=True)
class _Links:
    identity: Identity
    base_url: str
    valid: timedelta

    def __call__(self, number: str, requester: str, now: datetime) -> str:
        return url(self.base_url, self.identity, number, requester, expiry(now, self.valid))


def maker(identity: Identity, http: Http | None) -> Maker | None:
    """What puts the link into the acknowledgment; None when there is no status page to link to."""
    if http is None or not http.form.enabled:
        return None
    return _Links(identity, http.base_url, http.status_link_valid)
