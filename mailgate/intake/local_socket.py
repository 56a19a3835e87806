"""serve's side of the hand-off socket (``state_dir/intake.sock``): piped mail stored by the daemon.

Each mail goes through the same writer as SMTP, LMTP and IMAP (so it is group-committed, logged as
"mail received" with source pipe, counted in the metrics) and is answered only after its commit.
The socket file is made for the daemon's user and group (mode 0660): whoever may use it could also
write to the database the direct path needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from mailgate.clock import Clock
from mailgate.domain import Envelope, Outcome, RawMail
from mailgate.errors import TempFail
from mailgate.intake.handoff import HEADER_LIMIT, SOCKET_NAME

log = logging.getLogger(__name__)
Submit = Callable[[RawMail, Envelope], Awaitable[Outcome | TempFail]]


def _answer(result: Outcome | TempFail) -> dict[str, object]:
    if isinstance(result, TempFail):
        return {"tempfail": str(result)}
    if result.status == "rejected":
        return {"rejected": result.reason or "rejected by policy"}
    return {"status": result.status, "ticket": result.number, "reason": result.reason}


def _envelope(head: dict[str, object], clock: Clock) -> Envelope | None:
    mail_from, to = head.get("from"), head.get("to")
    if not isinstance(mail_from, str) or not isinstance(to, list) or not all(isinstance(t, str) for t in to):
        return None
    return Envelope(mail_from=mail_from, rcpt_tos=tuple(to), source="pipe", received_at=clock.now(), peer="local")


class LocalIntake:
    """The listening socket and its connections; ``close`` stops taking new mail (answers still go out)."""

    def __init__(self, state_dir: Path, submit: Submit, clock: Clock, max_size: Callable[[], int | None]) -> None:
        self.path = state_dir / SOCKET_NAME
        self._submit = submit
        self._clock = clock
        self._max_size = max_size
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> bool:
        """False (with a log line) when the socket cannot be made: ``ingest`` then stores mail itself."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _answers(self.path):
            log.warning("another daemon answers on %s; piped mail goes to it", self.path)
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a daemon that did not stop cleanly
        old = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=HEADER_LIMIT)
        except OSError as exc:
            log.warning("no hand-off socket at %s (%s); ingest stores mail itself", self.path, exc.strerror or exc)
            return False
        finally:
            os.umask(old)
        return True

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Mails are read and submitted as they come (so a client that sends an archive ahead of its
        answers gets group commits), and answered in the order they came, each after its commit."""
        answers: asyncio.Queue[asyncio.Future[dict[str, object]] | None] = asyncio.Queue(maxsize=IN_FLIGHT)
        answering = asyncio.create_task(_answer_in_order(answers, writer))
        try:
            while (line := await reader.readline()) and self._server is not None:
                head = json.loads(line)
                size = head.get("size") if isinstance(head, dict) else None
                env = _envelope(head, self._clock) if isinstance(head, dict) else None
                if not isinstance(size, int) or size < 0 or env is None:
                    await answers.put(_given({"rejected": "malformed hand-off header"}))
                    break
                limit = self._max_size()
                if limit is not None and size > limit:
                    await _discard(reader, size)
                    await answers.put(_given({"rejected": f"message too large ({size} > {limit} bytes)"}))
                else:
                    await answers.put(asyncio.ensure_future(self._store(await _read(reader, size), env)))
        except (ValueError, asyncio.IncompleteReadError, ConnectionError):
            pass  # a client that sent garbage or went away: a mail it got no answer for is a temporary failure
        except Exception:  # a bug of ours: the client's mail stays with its MTA, which tries again
            log.exception("handing over a piped mail failed")
        finally:
            await answers.put(None)
            await answering  # every mail taken is answered (or, the client gone, at least stored) first
            writer.close()

    async def _store(self, raw: RawMail, env: Envelope) -> dict[str, object]:
        return _answer(await self._submit(raw, env))


IN_FLIGHT = 32  # mails of one connection being stored at once; the client's window is smaller


def _given(answer: dict[str, object]) -> asyncio.Future[dict[str, object]]:
    done: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
    done.set_result(answer)
    return done


async def _answer_in_order(
    answers: asyncio.Queue[asyncio.Future[dict[str, object]] | None], writer: asyncio.StreamWriter
) -> None:
    while (pending := await answers.get()) is not None:
        try:
            answer = await pending
        except Exception:  # a bug of ours while storing: the MTA keeps the mail and tries again
            log.exception("handing over a piped mail failed")
            answer = {"tempfail": "internal error while storing; try again"}
        with contextlib.suppress(ConnectionError):
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()


async def _read(reader: asyncio.StreamReader, size: int) -> bytearray:
    """The mail's bytes, read a piece at a time into one buffer (``readexactly`` would gather the whole
    mail in the stream's buffer and then copy it: twice its size held)."""
    data = bytearray()
    while len(data) < size:
        piece = await reader.read(min(size - len(data), 1 << 20))
        if not piece:
            raise asyncio.IncompleteReadError(bytes(data[:64]), size)
        data += piece
    return data


async def _discard(reader: asyncio.StreamReader, size: int) -> None:
    while size > 0:
        size -= len(await reader.readexactly(min(size, 1 << 16)))


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
