"""One log line per received mail, whatever the source: "did mail X arrive, and what happened to it?"

The line is written when the writer resolves the mail's future, i.e. after its commit (or when it
is known it will be retried), so it never claims more than is stored. It wraps whichever writer serve
uses (in-process or the pipeline child), so SMTP, LMTP and IMAP are logged alike and in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future
from typing import Protocol

from mailgate.daemon.writer import Result
from mailgate.domain import Envelope, RawMail
from mailgate.errors import TempFail
from mailgate.logformat import log_event
from mailgate.metrics import INGEST_SECONDS, MAILS_RECEIVED

log = logging.getLogger("mailgate.intake")


class Submitter(Protocol):
    def submit(self, raw: RawMail, envelope: Envelope) -> Future[Result]: ...


def mail_received(envelope: Envelope, size: int, result: Result, ms: float) -> None:
    outcome = "tempfail" if isinstance(result, TempFail) else result.status
    MAILS_RECEIVED.labels(envelope.source, outcome).inc()
    INGEST_SECONDS.labels(envelope.source).observe(ms / 1000)
    if not log.isEnabledFor(logging.INFO):
        return
    where = {"mailbox": envelope.mailbox} if envelope.mailbox else {"peer": envelope.peer}
    to = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
    if len(envelope.rcpt_tos) > 1:
        to += f" (+{len(envelope.rcpt_tos) - 1})"
    if isinstance(result, TempFail):
        log_event(log, "mail received", outcome="tempfail", source=envelope.source, **where,
                  mail_from=envelope.mail_from, to=to, size=size, ms=round(ms, 1), reason=str(result))
        return
    route = result.route
    log_event(
        log,
        "mail received",
        outcome=result.status,
        source=envelope.source,
        **where,
        id=result.inbound_id,
        message_id=result.message_id,
        mail_from=envelope.mail_from,
        to=to,
        ticket=result.number,
        thread=result.thread or None,
        topic=route.help_topic if route is not None else None,
        size=size,
        ms=round(ms, 1),
        reason=result.reason,
    )


class LoggedWriter:
    """The writer's ``submit``/``submit_async``, each mail's outcome logged when it is known."""

    def __init__(self, writer: Submitter) -> None:
        self._writer = writer

    def submit(self, raw: RawMail, envelope: Envelope) -> Future[Result]:
        started, size = time.monotonic(), len(raw)
        future = self._writer.submit(raw, envelope)

        def done(f: Future[Result]) -> None:
            try:
                mail_received(envelope, size, f.result(), (time.monotonic() - started) * 1000)
            except Exception:  # logging must never cost a mail its answer
                log.exception("could not log a received mail")

        future.add_done_callback(done)
        return future

    def submit_async(self, raw: RawMail, envelope: Envelope) -> asyncio.Future[Result]:
        return asyncio.wrap_future(self.submit(raw, envelope))
