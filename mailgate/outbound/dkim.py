"""DKIM signing of outgoing mail (dkimpy), so receivers can trust that a notification is ours."""

from __future__ import annotations

import dkim

from mailgate.config import Dkim
from mailgate.errors import ConfigError

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"reply-to",
    b"auto-submitted",
)


class DkimSigner:
    def __init__(self, settings: Dkim) -> None:
        try:
            self._key = settings.private_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{settings.private_key_file}:1: cannot read the DKIM key: {exc.strerror}") from None
        self._selector = settings.selector.encode()
        self._domain = settings.domain.encode()
        self.sign(b"From: a@example.com\r\nSubject: key check\r\n\r\nx\r\n")  # a bad key fails at load, not at send

    def sign(self, data: bytes) -> bytes:
        try:
            signature = dkim.sign(data, self._selector, self._domain, self._key, include_headers=list(SIGNED_HEADERS))
        except dkim.DKIMException as exc:
            raise ConfigError(f"DKIM signing failed: {exc}") from None
        return bytes(signature) + data
