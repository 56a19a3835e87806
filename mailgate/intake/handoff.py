"""Handing piped mail to the running ``serve`` over a local socket, and the socket's framing.

An MTA alias runs ``mailgate ingest`` once per mail. Storing the mail in that process costs the
imports, the schema check and the configuration of the whole pipeline every time; when ``serve``
is running it already has all of that, so ``ingest`` only reads the mail, sends it over
``state_dir/intake.sock`` and exits with the daemon's answer, which comes after the commit like an
SMTP 250. This module is the client side and must stay light: the standard library alone.

Framing, per mail, on one connection: the client sends a JSON line ``{"from", "to", "size"}`` and
then exactly ``size`` bytes; the daemon answers with one JSON line, ``{"status", "ticket", "reason"}``
when stored, ``{"rejected": reason}`` or ``{"tempfail": reason}``. Answers come in the order the mails
were sent, and a client may send several before reading (``WINDOW``), so an archive is group-committed.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

SOCKET_NAME = "intake.sock"
HEADER_LIMIT = 64 * 1024  # one JSON line of envelope; anything longer is not ours
WINDOW = 16  # mails sent ahead of their answers


@dataclass(frozen=True)
class Answer:
    """What happened to one mail: ``kind`` is stored, rejected or tempfail (as the direct path's results)."""

    kind: str
    status: str = ""
    ticket: str | None = None
    reason: str | None = None


def header(mail_from: str, rcpt: str | None, size: int) -> bytes:
    return json.dumps({"from": mail_from, "to": [rcpt] if rcpt else [], "size": size}).encode() + b"\n"


def parse_answer(line: bytes) -> Answer:
    try:
        data = json.loads(line)
    except ValueError:
        return Answer("tempfail", reason="the daemon's answer could not be read")
    if not isinstance(data, dict):
        return Answer("tempfail", reason="the daemon's answer could not be read")
    for kind in ("rejected", "tempfail"):
        if kind in data:
            return Answer(kind, reason=str(data[kind]))
    return Answer("stored", str(data.get("status", "")), data.get("ticket"), data.get("reason"))


class Handoff:
    """One connection to serve's socket; ``open`` gives None when no daemon listens there."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb")

    @classmethod
    def open(cls, state_dir: Path) -> Handoff | None:
        path = state_dir / SOCKET_NAME
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(path))
        except OSError:  # no daemon, a stale socket, or one we may not use: the mail is stored here instead
            sock.close()
            return None
        return cls(sock)

    def post(self, raw: bytes, mail_from: str, rcpt: str | None) -> str | None:
        """Send one mail without waiting for its answer; the reason when the connection is gone."""
        try:
            self._sock.sendall(header(mail_from, rcpt, len(raw)))
            self._sock.sendall(raw)
        except OSError as exc:
            return f"the daemon went away ({exc.strerror or exc})"
        return None

    def receive(self) -> Answer:
        """The answer to the oldest mail posted; a connection lost before it is a temporary failure (the
        MTA tries again, and dedupe makes a mail stored just before the loss one mail)."""
        try:
            line = self._reader.readline(HEADER_LIMIT)
        except OSError as exc:
            return Answer("tempfail", reason=f"the daemon went away ({exc.strerror or exc})")
        if not line.endswith(b"\n"):
            return Answer("tempfail", reason="the daemon went away before answering")
        return parse_answer(line)

    def close(self) -> None:
        self._reader.close()
        self._sock.close()
