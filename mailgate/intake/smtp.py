"""aiosmtpd handler for SMTP and LMTP: accept at RCPT, store at DATA, answer 250 only after commit.

Outcomes become protocol codes here and only here: TempFail -> 451, policy
rejection -> 550, any bug of ours -> 451 via ``handle_exception`` (never
aiosmtpd's default 500, which would make the sender's MTA bounce the mail).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP

from mailgate.clock import Clock
from mailgate.config import SmtpIntake
from mailgate.domain import Envelope, Outcome
from mailgate.errors import TempFail
from mailgate.identity import is_own_address

log = logging.getLogger(__name__)
Submit = Callable[[bytes, Envelope], Awaitable[Outcome | TempFail]]


class Gate:
    """What one daemon's listener holds at once: connections, and bytes of mail being stored.

    Past ``max_connections`` a new client hears ``421`` and comes back later; past
    ``max_bytes_in_flight`` a DATA command hears ``451`` before any data is sent. Both are
    answers an MTA retries, and neither lets a flood of clients or mails take the daemon's memory.
    """

    def __init__(self, limits: Callable[[], SmtpIntake]) -> None:
        self._limits = limits
        self.connections = 0
        self.bytes_in_flight = 0

    def admit(self) -> bool:
        if self.connections >= self._limits().max_connections:
            return False
        self.connections += 1
        return True

    def leave(self) -> None:
        self.connections -= 1

    def full(self) -> bool:
        return self.bytes_in_flight >= self._limits().max_bytes_in_flight


COMMAND_LINE = 4096  # the longest command line (RFC 5321: 512, more with extensions); DATA lines may be longer


class _Intake:
    """What IntakeSMTP and IntakeLMTP add to aiosmtpd: caps, and a DATA reader of our own.

    aiosmtpd answers a line longer than its stream limit with a permanent "500 Line too long",
    and the sending MTA bounces a mail it could have retried or we could have stored (HTML mailers
    and unwrapped base64 write such lines). Like Postfix, we take the mail: a long line is read in
    pieces of the stream limit and kept whole. Lines are gathered into one buffer, not a list of
    one object per line, which cost about twice the mail again in memory.
    """

    gate: Gate | None = None
    _admitted = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if self.gate is None or self._admitted:  # (STARTTLS calls this again on the same connection)
            return
        self._admitted = self.gate.admit()
        if not self._admitted:
            self._handler_coroutine.cancel()  # type: ignore[attr-defined]  # never greets this client
            transport.write(b"421 4.7.0 Too many connections, please try again later\r\n")
            transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted and self.gate is not None:
            self._admitted = False
            self.gate.leave()
        super().connection_lost(error)  # type: ignore[misc]

    async def smtp_DATA(self, arg: str) -> None:
        me: Any = self
        if await me.check_helo_needed() or await me.check_auth_needed("DATA"):
            return
        if not me.envelope.rcpt_tos:
            await me.push("503 Error: need RCPT command")
            return
        if arg:
            await me.push("501 Syntax: DATA")
            return
        if self.gate is not None and self.gate.full():
            await me.push("451 4.3.1 Too much mail in progress, please try again later")
            return
        await me.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            data, too_much = await self._read_data(me)
            if too_much:
                await me.push("552 5.3.4 Message too big for this system")  # (LMTP: once per recipient, see push)
                me._set_post_data_state()
                return
            # handed on as it is (bytes-like; a copy would double what a big mail costs), taken by the handler
            me.envelope.content = me.envelope.original_content = data
            del data
            status = await me._call_handler_hook("DATA")
        finally:
            self._release()
        me._set_post_data_state()
        await me.push("250 OK" if status is MISSING else status)

    _held = 0  # bytes of the current mail counted in the gate, from the first line received to the answer

    def _hold(self, size: int) -> None:
        if self.gate is not None:
            self._held += size
            self.gate.bytes_in_flight += size

    def _release(self) -> None:
        if self.gate is not None:
            self.gate.bytes_in_flight -= self._held
        self._held = 0

    async def _read_data(self, me: Any) -> tuple[bytearray, bool]:
        """The mail (dot-unstuffed) and whether it went over the size limit (then only drained)."""
        data = bytearray()
        limit: int | None = me.data_size_limit
        size, line_start, too_much = 0, True, False
        while me.transport is not None:
            try:
                piece: bytes = await me._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:  # a long line: take what is buffered and go on
                piece = await me._reader.read(exc.consumed)
            if line_start and piece == b".\r\n":
                return data, too_much
            size += len(piece)
            if limit and size > limit and not too_much:
                too_much = True
                data.clear()
                self._release()
            if not too_much:
                data += piece[1:] if line_start and piece[:1] == b"." else piece
                self._hold(len(piece))
            line_start = piece.endswith(b"\r\n")
        return data, too_much


class IntakeSMTP(_Intake, SMTP):
    line_length_limit = COMMAND_LINE


class IntakeLMTP(_Intake, LMTP):
    """LMTP whose own refusals after DATA (too big) also come once per recipient.

    aiosmtpd answers those with a single line; an LMTP client waiting for one
    reply per recipient (RFC 2033 section 4.2) would hang and lose track.
    """

    line_length_limit = COMMAND_LINE
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
    def __init__(
        self,
        submit: Submit,
        addresses: Callable[[], frozenset[str]],
        clock: Clock,
        *,
        lmtp: bool,
        limits: Callable[[], SmtpIntake] = SmtpIntake,
    ) -> None:
        self._submit = submit
        self._addresses = addresses
        self._clock = clock
        self._lmtp = lmtp
        self._limits = limits

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if not is_own_address(address, self._addresses()):
            return f"550 5.1.1 <{_short(address)}>: recipient not accepted here"
        if len(envelope.rcpt_tos) >= self._limits().max_recipients:  # RFC 5321 4.5.3.1.10: sent again later
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        envelope.original_content = envelope.content = None  # held by the pipeline alone from here
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
            pending = self._submit(raw, env)
            del raw  # so a big mail's bytes are freed as soon as the pipeline is done with them
            status = status_for(await pending)
        except Exception as exc:  # answer every LMTP recipient, not just one line
            log.exception("storing a message failed")
            status = f"451 4.3.0 Temporary server error, please retry ({type(exc).__name__})"
        if self._lmtp:  # LMTP: one reply per accepted recipient (RFC 2033 section 4.2)
            return "\r\n".join([status] * max(1, len(envelope.rcpt_tos)))
        return status

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %r", error, exc_info=error)
        return "451 4.3.0 Temporary server error, please retry"
