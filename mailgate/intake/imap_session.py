"""Talking to an IMAP server, for the poller and ``mailgate imap check``: TLS mode, credentials, login,
folders, fetch batches, the envelope a mail carries in its headers, acknowledging mail (MOVE, or
COPY + \\Deleted + UID EXPUNGE), and one-line wording of failures.

Credentials are read at every login, so a password file or OAuth2 token that
the admin's tooling rewrites is picked up without a restart. An OAuth2 token
(from ``oauth2_token_command``'s stdout or ``oauth2_token_file``) is either
the bare access token or a JSON object ``{"access_token": ..., "expires_at":
...}`` with ``expires_at`` in Unix seconds or ISO 8601; the watchdog reads
the expiry from there, or else assumes the file's mtime plus
``watchdog.token_lifetime``.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import logging
import os
import re
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any

from imapclient import DELETED, IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout

from mailgate.config import ImapMailbox, is_loopback
from mailgate.domain import Envelope
from mailgate.errors import TempFail

log = logging.getLogger(__name__)
TOKEN_COMMAND_TIMEOUT = 60.0


class CredentialError(Exception):
    """The password or token could not be obtained; retried with the slow (login) backoff."""


def _token_text(text: str, source: str) -> tuple[str, datetime | None]:
    text = text.strip()
    if not text.startswith("{"):
        if not text:
            raise CredentialError(f"{source} gave an empty token")
        return text, None
    try:
        data = json.loads(text)
        token = str(data["access_token"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialError(f"{source}: JSON without a usable access_token ({exc!r})") from None
    return token, _parse_expiry(data.get("expires_at"))


def _parse_expiry(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def token_expiry(path: Path, lifetime_seconds: float | None) -> datetime | None:
    """When the token in *path* expires: its ``expires_at``, else mtime + lifetime; None if unknown."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except OSError:
        return None
    try:
        _, expires = _token_text(text, str(path))
    except CredentialError:
        expires = None
    if expires is None and lifetime_seconds is not None:
        expires = datetime.fromtimestamp(mtime + lifetime_seconds, UTC)
    return expires


def oauth2_token(mb: ImapMailbox) -> str:
    if mb.oauth2_token_file is not None:
        try:
            return _token_text(mb.oauth2_token_file.read_text(), str(mb.oauth2_token_file))[0]
        except OSError as exc:
            raise CredentialError(f"cannot read oauth2_token_file: {exc}") from None
    assert mb.oauth2_token_command is not None
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", mb.oauth2_token_command],
            capture_output=True,
            text=True,
            timeout=TOKEN_COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialError(f"oauth2_token_command failed: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [""])[-1][:300]
        raise CredentialError(f"oauth2_token_command exited with {done.returncode}: {detail}")
    return _token_text(done.stdout, "oauth2_token_command")[0]


def password(mb: ImapMailbox) -> str:
    if mb.password_file is not None:
        try:
            return mb.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise CredentialError(f"cannot read password_file: {exc}") from None
    if mb.password_env is not None:
        value = os.environ.get(mb.password_env)
        if value is None:
            raise CredentialError(f"environment variable {mb.password_env} is not set")
        return value
    assert mb.password is not None
    return mb.password


def ssl_context(mb: ImapMailbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(mb.cafile) if mb.cafile else None)


def connect(mb: ImapMailbox) -> IMAPClient:
    """A logged-in client (nothing selected yet), or an exception that ``describe`` can word."""
    if mb.security == "plain" and not is_loopback(mb.host):  # config refuses it too; belt and braces
        raise CredentialError(f"security: plain is allowed only to a loopback host, not {mb.host}")
    seconds = mb.timeout.total_seconds()
    timeout = SocketTimeout(connect=min(seconds, 30.0), read=seconds)
    tls = mb.security == "tls"
    client = IMAPClient(mb.host, port=mb.port, ssl=tls, ssl_context=ssl_context(mb) if tls else None, timeout=timeout)
    try:
        if mb.security == "starttls":
            client.starttls(ssl_context(mb))
        if mb.oauth2_token_command is not None or mb.oauth2_token_file is not None:
            client.oauth2_login(mb.username, oauth2_token(mb))
        else:
            client.login(mb.username, password(mb))
    except BaseException:
        close(client)  # LOGOUT after a refused login is polite and closes quietly
        raise
    client.normalise_times = False
    return client


def close(client: IMAPClient, *, logout: bool = True) -> None:
    """Log out politely when asked, and always drop the socket; never raises."""
    if logout:
        with contextlib.suppress(Exception):  # the connection may already be gone
            client.logout()
            return
    with contextlib.suppress(Exception):
        client.shutdown()


def is_auth_failure(exc: BaseException) -> bool:
    return isinstance(exc, LoginError | CredentialError)


def describe(mb: ImapMailbox, exc: BaseException) -> str:
    """One line an admin can act on."""
    where = f"{mb.host}:{mb.port}"
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    if re.fullmatch(r"b'.*'|b\".*\"", text):  # imapclient words some errors as repr(bytes)
        text = text[2:-1]
    if isinstance(exc, LoginError):
        return f"login as {mb.username} refused by {where}: {text}"
    if isinstance(exc, CredentialError):
        return f"no credentials for {mb.username}: {text}"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return f"TLS with {where} failed ({mb.security}): {text}"
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"no answer from {where} (timeout)"
    if isinstance(exc, imaplib.IMAP4.abort):
        return f"connection to {where} lost: {text}"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return f"connection to {where} lost: {text}"
    if isinstance(exc, OSError):
        return f"cannot reach {where}: {text}"
    if isinstance(exc, IMAPClientError | imaplib.IMAP4.error):
        return f"{where} refused a command: {text}"
    if isinstance(exc, TempFail):
        return f"database unavailable: {text}"
    return f"unexpected error: {exc!r}"


def finish_messages(
    client: IMAPClient,
    uids: Sequence[int],
    folder: str,
    *,
    use_move: bool,
    before: Callable[[Sequence[int]], None] | None = None,
) -> list[int]:
    """Move *uids* to *folder*; returns those that could not be moved (they stay and are retried).

    ``before`` runs right before each MOVE (or COPY + EXPUNGE) command and may raise to prevent it: the
    mailbox lease's last check, as close to the command as it can be."""
    def move(these: Sequence[int]) -> None:
        if before is not None:
            before(these)
        _move(client, these, folder, use_move)

    if not uids:
        return []
    for attempt in range(2):
        try:
            move(uids)
            return []
        except IMAPClient.AbortError:
            raise
        except IMAPClientError as exc:
            if attempt == 0:  # the folder may have been deleted under us ([TRYCREATE]): create it, try again
                with contextlib.suppress(IMAPClientError):
                    ensure_folder(client, folder)
                continue
            log.warning("moving %d message(s) to %s failed: %s", len(uids), folder, exc)
    if len(uids) == 1:
        return list(uids)
    failed = []  # one by one, so one bad mail does not hold back the rest
    for uid in uids:
        try:
            move([uid])
        except IMAPClient.AbortError:
            raise
        except IMAPClientError:
            failed.append(uid)
    return failed


def _move(client: IMAPClient, uids: Sequence[int], folder: str, use_move: bool) -> None:
    if use_move:
        client.move(uids, folder)
        return
    client.copy(uids, folder)
    client.add_flags(uids, [DELETED], silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:  # without UIDPLUS, EXPUNGE removes every \Deleted mail in the folder: ours are the only ones we flag
        client.expunge()


def ensure_folder(client: IMAPClient, folder: str) -> None:
    if client.folder_exists(folder):
        return
    try:
        client.create_folder(folder)
        log.info("created IMAP folder %s", folder)
    except IMAPClientError:
        if not client.folder_exists(folder):  # someone else may have created it meanwhile
            raise


def envelope_for(raw: bytes, mailbox: str, now: datetime, peer: str) -> Envelope:
    """Return-Path and Delivered-To/X-Original-To, as the final MTA wrote them, stand in for the envelope."""
    end = raw.find(b"\r\n\r\n")
    end = raw.find(b"\n\n") if end < 0 else end
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw if end < 0 else raw[: end + 2])
    mail_from = parseaddr(str(headers.get("Return-Path", "")))[1]
    rcpts = [a for _, a in getaddresses([str(v) for v in headers.get_all("Delivered-To", [])]) if a]
    rcpts += [a for _, a in getaddresses([str(v) for v in headers.get_all("X-Original-To", [])]) if a]
    return Envelope(
        mail_from=mail_from,
        rcpt_tos=tuple(dict.fromkeys(r.lower() for r in rcpts)),
        source="imap",
        received_at=now,
        peer=peer,
        mailbox=mailbox,
    )


def exists_reported(client: IMAPClient) -> bool:
    """Did the server announce new mail outside IDLE responses (and so out of idle_check's sight)?

    Dovecot announces mail that arrived just before IDLE ahead of its "+ idling", and any
    command may carry an EXISTS; imaplib keeps those in ``untagged_responses``.
    """
    return client._imap.untagged_responses.pop("EXISTS", None) is not None


def fetch_batches(uids: Sequence[int], sizes: dict[int, int], count: int, max_bytes: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if chunk and (len(chunk) >= count or total + size > max_bytes):
            yield chunk
            chunk, total = [], 0
        chunk.append(uid)
        total += size
    if chunk:
        yield chunk


def check_mailbox(mb: ImapMailbox) -> dict[str, Any]:
    """Log in and describe what the poller will see (for ``mailgate imap check``); raises on failure."""
    client = connect(mb)
    try:
        caps = sorted(c.decode() for c in client.capabilities())
        listing = client.list_folders()
        separator = next((d.decode() if isinstance(d, bytes) else d for _, d, _ in listing if d), None)
        names = [str(name) for _, _, name in listing]
        folders: dict[str, Any] = {}
        for role, name in (
            ("watched", mb.folder),
            ("processed", mb.processed_folder),
            ("quarantine", mb.quarantine_folder),
        ):
            if name is None:
                continue
            if not client.folder_exists(name):
                folders[name] = {"role": role, "exists": False}
                continue
            status = client.folder_status(name, [b"MESSAGES", b"UNSEEN", b"UIDVALIDITY", b"UIDNEXT"])
            folders[name] = {"role": role, "exists": True, **{k.decode().lower(): int(v) for k, v in status.items()}}
    finally:
        close(client)
    problems = [
        f"folder {name} does not exist" for name, f in folders.items() if f["role"] == "watched" and not f["exists"]
    ]
    return {
        "name": mb.name,
        "server": f"{mb.host}:{mb.port}",
        "security": mb.security,
        "username": mb.username,
        "capabilities": caps,
        "mode": "idle" if mb.idle and "IDLE" in caps else "poll",
        "move": "MOVE" in caps,
        "separator": separator,
        "folders_on_server": names,
        "folders": folders,
        "problems": problems,
    }
