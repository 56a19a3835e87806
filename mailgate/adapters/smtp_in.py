"""aiosmtpd handler for SMTP and LMTP: accept at RCPT, store at DATA, answer 250 only after commit.

Outcomes become protocol codes here and only here: TempFail -> 451, policy
rejection -> 550, any bug of ours -> 451 via ``handle_exception`` (never
aiosmtpd's default 500, which would make the sender's MTA bounce the mail).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from mailgate.clock import Clock
from mailgate.domain import Envelope, Outcome
from mailgate.errors import TempFail
from mailgate.identity import is_own_address

log = logging.getLogger(__name__)
Submit = Callable[[bytes, Envelope], Awaitable[Outcome | TempFail]]


# RFC 5322 caps lines at 998 characters, but real mail (HTML mailers, unwrapped base64) breaks it,
# and aiosmtpd answers such a mail with a permanent "500 Line too long": the sender would bounce
# it. Accept long lines up to this size instead (the message size limit still applies).
MAX_LINE = 1 << 20


class IntakeSMTP(SMTP):
    line_length_limit = MAX_LINE


class IntakeLMTP(LMTP):
    """LMTP whose own refusals after DATA (too big, line too long) also come once per recipient.

    aiosmtpd answers those with a single line; an LMTP client waiting for one
    reply per recipient (RFC 2033 section 4.2) would hang and lose track.
    """

    line_length_limit = MAX_LINE
    _after_data = False

    async def push(self, status: Any) -> None:  # str or bytes, as in aiosmtpd
        if isinstance(status, str) and status.startswith("354"):
            self._after_data = True  # the next reply is the final answer to DATA
        elif self._after_data:
            self._after_data = False
            count = len(self.envelope.rcpt_tos) if self.envelope is not None else 1
            if isinstance(status, str) and "\r\n" not in status and count > 1:
                status = "\r\n".join([status] * count)
        await super().push(status)


def protocol_class(*, lmtp: bool) -> type[Any]:
    """The aiosmtpd protocol ``serve`` should instantiate per connection."""
    return IntakeLMTP if lmtp else IntakeSMTP


def status_for(result: Outcome | TempFail) -> str:
    if isinstance(result, TempFail):
        return f"451 4.3.0 Temporary failure, please retry: {_short(str(result))}"
    if result.status == "rejected":
        return f"550 5.7.1 {_short(result.reason or 'Rejected by policy')}"
    ticket = f" ticket {result.number}" if result.number else ""
    return f"250 2.0.0 Stored ({result.status}){ticket}"


def _short(text: str) -> str:
    return " ".join(text.split())[:200]


class IntakeHandler:
    def __init__(self, submit: Submit, addresses: Callable[[], frozenset[str]], clock: Clock, *, lmtp: bool) -> None:
        self._submit = submit
        self._addresses = addresses
        self._clock = clock
        self._lmtp = lmtp

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if not is_own_address(address, self._addresses()):
            return f"550 5.1.1 <{_short(address)}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        env = Envelope(
            mail_from=envelope.mail_from or "<>",  # MAIL FROM:<>, the null sender of a bounce
            rcpt_tos=tuple(envelope.rcpt_tos),
            source="lmtp" if self._lmtp else "smtp",
            received_at=self._clock.now(),
            peer=str(session.peer[0]) if session.peer else "",
        )
        try:
            status = status_for(await self._submit(raw, env))
        except Exception as exc:  # answer every LMTP recipient, not just one line
            log.exception("storing a message failed")
            status = f"451 4.3.0 Temporary server error, please retry ({type(exc).__name__})"
        if self._lmtp:  # LMTP: one reply per accepted recipient (RFC 2033 section 4.2)
            return "\r\n".join([status] * max(1, len(envelope.rcpt_tos)))
        return status

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %r", error, exc_info=error)
        return "451 4.3.0 Temporary server error, please retry"
