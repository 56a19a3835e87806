"""Outbound transports: an SMTP relay (STARTTLS/TLS, auth) or a Maildir for demos and development.

Each send ends in one of three typed results; the outbox decides retry or
give-up from the type alone, so transports never touch the database.
Only a refusal of this mail or its recipient is permanent; when the relay
refuses us (login, sender address, greeting) or cannot be reached, the mail
waits and is retried, because the fix is on our side.
"""

from __future__ import annotations

import mailbox
import smtplib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Sent:
    detail: str = ""


@dataclass(frozen=True)
class TempFailure:
    reason: str


@dataclass(frozen=True)
class PermFailure:
    reason: str


SendResult = Sent | TempFailure | PermFailure


class Transport(Protocol):
    def send(self, mail_from: str, recipients: list[str], data: bytes) -> SendResult: ...


class MaildirTransport:
    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, mail_from: str, recipients: list[str], data: bytes) -> SendResult:
        try:
            box = mailbox.Maildir(self.path, create=True)
            key = box.add(data)
        except OSError as exc:
            return TempFailure(f"maildir {self.path}: {exc}")
        return Sent(f"maildir {key}")


class SmtpTransport:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        starttls: bool = False,
        tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.starttls, self.tls = host, port, starttls, tls
        self.username, self.password, self.timeout = username, password, timeout
        self.context = context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        if self.tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.context)
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.starttls:
            client.starttls(context=self.context)
        return client

    def send(self, mail_from: str, recipients: list[str], data: bytes) -> SendResult:
        eai = [a for a in (mail_from, *recipients) if not a.isascii()]  # internationalised addresses (RFC 6531)
        try:
            with self._connect() as client:
                client.ehlo_or_helo_if_needed()
                if eai and not client.has_extn("smtputf8"):
                    return PermFailure(
                        f"relay {self.host}:{self.port} does not offer SMTPUTF8, needed for {', '.join(eai)}"
                    )
                if self.username:
                    client.login(self.username, self.password or "")
                answer = _keep_data_answer(client)
                refused = client.sendmail(mail_from, recipients, data, mail_options=["SMTPUTF8"] if eai else [])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            text = "; ".join(f"{r}: {c} {m!r}" for r, (c, m) in exc.recipients.items())
            return PermFailure(text) if all(c >= 500 for c in codes) else TempFailure(text)
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPSenderRefused, smtplib.SMTPConnectError) as exc:
            # the relay refuses *us* (login, sender, greeting): our configuration, not this mail's fault
            return TempFailure(f"relay {self.host}:{self.port} refused us: {exc.smtp_code} {exc.smtp_error!r}")
        except smtplib.SMTPResponseException as exc:
            text = f"{exc.smtp_code} {exc.smtp_error!r}"
            return PermFailure(text) if exc.smtp_code >= 500 else TempFailure(text)
        except (OSError, smtplib.SMTPException) as exc:
            return TempFailure(f"{type(exc).__name__}: {exc}")
        if refused:
            return PermFailure(f"refused: {refused}")
        said = f": {answer[0][0]} {answer[0][1].decode(errors='replace')}" if answer else ""
        return Sent(f"relayed via {self.host}:{self.port}{said}")


def _keep_data_answer(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
    """The relay's answer to DATA ("250 2.0.0 queued as 4XyZ"), which ``sendmail`` checks and drops:
    it is what an admin greps the relay's log for."""
    answers: list[tuple[int, bytes]] = []
    data = client.data

    def keeping(msg: bytes | str) -> tuple[int, bytes]:
        answers.append(data(msg))
        return answers[-1]

    client.data = keeping  # type: ignore[method-assign,assignment]
    return answers
