"""Signed tokens in our own Message-IDs and loop header, and in the links and forms of our web pages.

A Message-ID we generate names the ticket and (as a keyed hash) the
recipient, signed with a secret only this installation knows. A reply that
quotes it threads back even with the subject changed; our own mail coming
back is recognised as a loop; and nobody can forge either without the key.
The same key signs what a browser carries back to us (``sign_link``): a status page's link and a
form's CSRF token.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

_TOKEN = re.compile(r"^([tba])(\d{1,18})-([a-z2-7]{10})$")
_MID_IN_TEXT = re.compile(r"<mg\.\d{1,18}\.[a-z2-7]{8}\.[a-z2-7]{6}\.[a-z2-7]{16}@[^>\s]+>", re.I)
_MID = re.compile(r"^<?mg\.(\d{1,18})\.([a-z2-7]{8})\.([a-z2-7]{6})\.([a-z2-7]{16})@([^>]+)>?$")


def _b32(data: bytes, length: int) -> str:
    """The first ``length`` base32 characters of ``data``: base32 turns each 5 bytes into 8 characters
    on their own, so only the bytes those characters need are encoded (a digest is 32)."""
    return base64.b32encode(data[: -(-length // 8) * 5]).decode().lower().rstrip("=")[:length]


@functools.lru_cache(maxsize=4096)
def _addr_spec(address: str) -> str:
    """``parseaddr`` is slow and a help desk writes to the same few addresses all day."""
    return parseaddr(address)[1]


def load_secret(path: Path) -> bytes:
    """Read the installation secret, creating it (0600) on first start."""
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        data = _create_secret(path)
    if len(data) < 16:
        raise ValueError(f"{path}: secret is too short (need at least 16 characters)")
    return data


def _create_secret(path: Path) -> bytes:
    """Write a complete file first, then link it into place: two processes starting at once
    (serve and an ingest pipe) end up with the same secret, and neither reads a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_hex(32).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race: use its secret
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return path.read_bytes().strip()


@dataclass(frozen=True)
class SignedId:
    ticket_id: int
    recipient_hash: str


class Identity:
    def __init__(self, secret: bytes, domain: str) -> None:
        self._secret = secret
        self.domain = domain.lower()
        self.loop_value = f"{self.domain}; {self._sign('loop', self.domain)}"

    def _sign(self, *parts: str | int, length: int = 16) -> str:
        mac = hmac.new(self._secret, "\x1f".join(str(p) for p in parts).encode(), hashlib.sha256)
        return _b32(mac.digest(), length)

    def fingerprint(self) -> str:
        """Names the secret without revealing it: daemons that must share one compare this."""
        return self._sign("fingerprint", self.domain)

    def recipient_hash(self, address: str) -> str:
        return self._sign("rcpt", _addr_spec(address).lower(), length=6)

    def message_id(self, ticket_id: int, recipient: str) -> str:
        rand = _b32(secrets.token_bytes(5), 8)
        rhash = self.recipient_hash(recipient)
        sig = self._sign("mid", ticket_id, rand, rhash)
        return f"<mg.{ticket_id}.{rand}.{rhash}.{sig}@{self.domain}>"

    def verify_message_id(self, message_id: str) -> SignedId | None:
        m = _MID.match(message_id.strip())
        if not m or m.group(5).lower() != self.domain:
            return None
        ticket_id, rand, rhash, sig = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if not hmac.compare_digest(sig, self._sign("mid", ticket_id, rand, rhash)):
            return None
        return SignedId(ticket_id, rhash)

    def token(self, kind: str, value: int, holder: str = "") -> str:
        """A signed plus-address token: ``t<ticket>`` in Reply-To, ``b<outbox row>`` as bounce address (VERP),
        ``a<ticket>`` in an agent's Reply-To, signed for that agent (``holder``) alone."""
        return f"{kind}{value}-{self._sign('plus', kind, value, holder.lower(), length=10)}"

    def plus_address(self, address: str, kind: str, value: int, holder: str = "") -> str:
        local, _, domain = _addr_spec(address).partition("@")
        return f"{local.split('+', 1)[0]}+{self.token(kind, value, holder)}@{domain}"

    def read_token(self, address: str, kind: str, holder: str = "") -> int | None:
        """The id in a valid token of ``kind`` in this address's plus part, else None (forged or absent)."""
        m = _TOKEN.match(address.strip().strip("<>").lower().rpartition("@")[0].partition("+")[2])
        if m is None or m.group(1) != kind:
            return None
        value = int(m.group(2))
        expected = self._sign("plus", kind, value, holder.lower(), length=10)
        return value if hmac.compare_digest(m.group(3), expected) else None

    def sign_link(self, purpose: str, *parts: str | int) -> str:
        """The signature of a token a browser carries (a status page's link, a form's CSRF token): keyed to
        ``purpose`` as well, so a token made for one use is never accepted for another."""
        return self._sign("link", purpose, *parts, length=32)

    def verify_link(self, signature: str, purpose: str, *parts: str | int) -> bool:
        # bytes, because compare_digest refuses non-ASCII str and the signature comes from strangers
        given = signature.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self.sign_link(purpose, *parts).encode())

    def signed_ids_in(self, text: str) -> list[SignedId]:
        """Our signed Message-IDs quoted anywhere in ``text`` (e.g. the headers a DSN sends back)."""
        found = []
        for m in _MID_IN_TEXT.finditer(text):
            signed = self.verify_message_id(m.group(0))
            if signed is not None:
                found.append(signed)
        return found

    def is_own_loop(self, header_value: str | None) -> bool:
        if not header_value:
            return False
        # bytes, because compare_digest refuses non-ASCII str and the header comes from strangers
        given = str(header_value).strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self.loop_value.encode())


def is_own_address(address: str, own: frozenset[str]) -> bool:
    """Our support addresses, including their plus-address forms (support+outage@...)."""
    local, at, domain = address.lower().rpartition("@")
    if not at:
        return False
    return address.lower() in own or f"{local.split('+', 1)[0]}@{domain}" in own
