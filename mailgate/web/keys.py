"""API keys: made once by ``mailgate api-key new``, recognised by their SHA-256 alone.

The configuration holds only the hash, so a leaked mailgate.yaml opens nothing. A presented key is
compared with every configured hash by ``hmac.compare_digest`` and the loop never stops early, so
how long a lookup takes says nothing about how much of a guess was right, or which key it was near.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mailgate.config.http import ApiKey
from mailgate.config.intake_policy import Rung

PREFIX = "mg_"  # so a key pasted somewhere it should not be is recognisable (secret scanners, logs)
MAX_KEY = 200  # characters; anything longer is not one of ours, and is not hashed


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key's name (``client`` of the submission), what it may do, and as whom."""

    name: str
    scopes: frozenset[str]
    agent: str | None  # the one agent a personal key acts as; None: each request names its agent
    rate: Rung  # how many requests it may make, and within what time

    @property
    def is_agent(self) -> bool:
        return "agent" in self.scopes

    def may(self, *scopes: str) -> bool:
        return bool(self.scopes & set(scopes))


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def find(keys: Sequence[ApiKey], presented: str) -> Caller | None:
    """The configured key the presented one hashes to, or None."""
    if not presented or len(presented) > MAX_KEY:
        return None
    wanted = digest(presented)
    found: ApiKey | None = None
    for key in keys:
        if hmac.compare_digest(key.sha256, wanted):
            found = key
    if found is None:
        return None
    return Caller(found.name, frozenset(found.scopes), found.agent, found.rate)


def new_key() -> tuple[str, str]:
    """A fresh key (256 random bits) and its SHA-256, the only part the configuration keeps."""
    key = PREFIX + secrets.token_urlsafe(32)
    return key, digest(key)
