"""Run the ingest pipeline in a child process, so that intake uses a second CPU core.

In one interpreter the listener (SMTP dialogue, IMAP fetches), the outbox sender and
the pipeline (parse, thread, route, store) share one lock and so one core. Here the
pipeline runs in a child with its own group-commit ``BatchWriter`` and the rest stays
in ``serve``. The contract is ``BatchWriter``'s: one future per mail, resolved only
after the commit that holds it, or with ``TempFail`` whenever the outcome is unknown,
including when the child dies mid-batch (it is then restarted). Nothing is lost
either way: a mail is answered 250 (or moved on IMAP) only after its commit, and a
source told to retry brings the same mail again, which dedupe then recognises.

The child exits when the parent's end of the pipe closes, so a daemon killed with
``kill -9`` leaves no orphan behind it beyond the batch it was committing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from mailgate import logformat
from mailgate.config import Config, Limits
from mailgate.daemon import memory
from mailgate.daemon.writer import Result
from mailgate.domain import Envelope, RawMail
from mailgate.errors import ParseError, TempFail
from mailgate.logformat import Format
from mailgate.pipeline.ingest import Parsed
from mailgate.pipeline.parse import parse

log = logging.getLogger(__name__)

# spawn, not fork: serve has threads, sockets and pooled database connections by now
SPAWN = multiprocessing.get_context("spawn")
_STOP = object()
START_TIMEOUT = 120.0
SLOTS = {"serve": 0, "pipeline": 1, "sender": 2}  # each process's slot in the shared turns (db.Turns)
PARSE_THREADS = 2  # parsing in serve's process: a slow mail delays only itself
PARSE_HERE_MAX = 1 << 20  # bigger mails are parsed by the child, which needs them whole anyway
CHUNK = 1 << 20  # the most one read or write of a mail's bytes on the pipe asks for


class ProcessWriter:
    """``BatchWriter``'s interface (``submit``, ``submit_async``, ``close``), backed by a child process."""

    def __init__(
        self,
        config: Config,
        *,
        threads: int = 1,
        max_batch: int = 64,
        on_commit: Callable[[list[Result]], None] | None = None,
        turns: Any = None,
    ) -> None:
        self._config = config
        self._threads = threads
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._turns = turns if turns is not None else SPAWN.RawArray("i", len(SLOTS))
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[int, Future[Result]]] = {}  # id -> (child generation, future)
        self._ids = itertools.count(1)
        self._outgoing: queue.Queue[object] = queue.Queue()
        self._closed = False
        self._generation = 0
        self._started_at = 0.0
        self._stopped = threading.Event()
        self._send_lock = threading.Lock()
        self._parsers = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="mailgate-parse")
        self._requests, self._proc = self._start()
        self._sender = threading.Thread(target=self._send_loop, name="mailgate-ingest-send", daemon=True)
        self._sender.start()

    @property
    def pid(self) -> int:
        return int(self._proc.pid)

    def alive(self) -> bool:
        return bool(self._proc.is_alive())

    @property
    def turns(self) -> Any:
        """The shared slots the daemon's ``Database`` objects count in (see ``Database.share_turns``)."""
        return self._turns

    def _start(self) -> tuple[Connection, Any]:
        requests_r, requests_w = SPAWN.Pipe(duplex=False)
        results_r, results_w = SPAWN.Pipe(duplex=False)
        proc = SPAWN.Process(
            target=child_main,
            args=(requests_r, results_w, self._config, self._threads, self._max_batch, log_levels(), self._turns),
            name="mailgate-ingest",
            daemon=True,
        )
        proc.start()
        requests_r.close()
        results_w.close()
        self._started_at = time.monotonic()
        if not results_r.poll(START_TIMEOUT):
            proc.kill()
            raise TempFail("the ingest process did not start")
        try:
            hello = results_r.recv()
        except EOFError:
            proc.join(5)
            raise TempFail(f"the ingest process failed to start (exit code {proc.exitcode})") from None
        if hello != "ready":
            proc.kill()
            raise TempFail(f"the ingest process failed to start: {hello}")
        self._generation += 1
        reader = threading.Thread(
            target=self._read_loop, args=(results_r, proc, self._generation), name="mailgate-ingest-read", daemon=True
        )
        reader.start()
        return requests_w, proc

    def submit(self, raw: RawMail, envelope: Envelope) -> Future[Result]:
        future: Future[Result] = Future()
        if self._closed:
            future.set_result(TempFail("shutting down"))
            return future
        self._outgoing.put(("mail", raw, envelope, future))
        return future

    def submit_async(self, raw: RawMail, envelope: Envelope) -> asyncio.Future[Result]:
        """For the event loop; not a coroutine, so no frame of ours keeps the mail's bytes while it waits."""
        return asyncio.wrap_future(self.submit(raw, envelope))

    def reconfigure(self, config: Config) -> None:
        """Hand a reloaded (already validated) configuration to the child, in order with the mail."""
        self._config = config
        self._outgoing.put(("config", config))

    def _send_loop(self) -> None:
        while True:
            item = self._outgoing.get()
            if item is _STOP:
                self._parsers.shutdown(wait=True)  # everything queued goes over first
                with self._lock:
                    requests = self._requests
                with contextlib.suppress(OSError):
                    requests.send(("stop",))
                return
            assert isinstance(item, tuple)
            if item[0] == "config":
                self._parsers.submit(self._send, item)  # the child applies it to the mail that follows
                continue
            _, raw, envelope, future = item
            if len(raw) > PARSE_HERE_MAX:  # the child parses it: handing over the parsed parts costs more
                self._parsers.submit(self._hand_over, raw, envelope, future, None)
            else:
                self._parsers.submit(self._parse_and_hand_over, raw, envelope, future)
            del item, raw  # not kept alive by this loop until the next mail comes

    def _parse_and_hand_over(self, raw: RawMail, envelope: Envelope, future: Future[Result]) -> None:
        """Parse here, in parallel with the child's work on earlier mail, in one of a few threads:
        a mail that takes long to parse delays only itself, not the mail queued behind it."""
        self._hand_over(raw, envelope, future, _parse_or_error(raw, self._config.main.intake.limits))

    def _hand_over(self, raw: RawMail, envelope: Envelope, future: Future[Result], parsed: Parsed) -> None:
        with self._lock:
            item_id = next(self._ids)
            self._pending[item_id] = (self._generation, future)
        if not self._send(("mail", item_id, len(raw), envelope, parsed), raw):
            with self._lock:
                self._pending.pop(item_id, None)
            future.set_result(TempFail("the ingest process is restarting"))

    def _send(self, message: tuple[Any, ...], raw: RawMail | None = None) -> bool:
        """The message, then the mail's bytes straight onto the pipe (pickled, or framed by ``send_bytes``,
        a big mail would be copied once more on each side)."""
        with self._send_lock:
            with self._lock:
                requests = self._requests
            try:
                requests.send(message)
                if raw is not None:
                    view, sent = memoryview(raw), 0
                    while sent < len(view):
                        sent += os.write(requests.fileno(), view[sent : sent + CHUNK])
                return True
            except (OSError, ValueError):  # the child died; the reader thread restarts it
                return False

    def _read_loop(self, results: Connection, proc: Any, generation: int) -> None:
        while True:
            try:
                item_id, result = results.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                entry = self._pending.pop(item_id, None)
            if entry is not None:
                entry[1].set_result(result)
            if self._on_commit is not None:
                try:
                    self._on_commit([result])
                except Exception:  # a failed wake-up must not stop the answers
                    log.exception("after-commit hook failed")
        results.close()
        proc.join(10)
        self._child_gone(proc, generation)

    def _child_gone(self, proc: Any, generation: int) -> None:
        with self._lock:
            ids = [i for i, (g, _) in self._pending.items() if g == generation]
            lost = [self._pending.pop(i)[1] for i in ids]
        for future in lost:
            future.set_result(TempFail("the ingest process stopped before answering"))
        if self._closed:
            self._stopped.set()
            return
        log.error("the ingest process died (exit code %s); %d mail(s) will be retried; restarting it",
                  proc.exitcode, len(lost))
        if time.monotonic() - self._started_at < 5:
            time.sleep(1)  # a child that dies at once must not turn into a fork loop
        while not self._closed:
            try:
                requests, new_proc = self._start()
            except TempFail as exc:
                log.error("%s; trying again in 5 s", exc)
                time.sleep(5)
                continue
            with self._lock:
                old, self._requests, self._proc = self._requests, requests, new_proc
            old.close()
            return
        self._stopped.set()

    def close(self, timeout: float = 60.0) -> None:
        """Finish everything already queued, then stop the child (killed after ``timeout``: what it had
        not committed was not answered yet, so its sources send it again)."""
        self._closed = True
        self._outgoing.put(_STOP)
        self._sender.join(timeout)
        if not self._stopped.wait(max(0.1, timeout)):
            log.error("the ingest process did not stop in time; killing it")
            self._proc.kill()
            self._stopped.wait(10)


def _parse_or_error(raw: RawMail, limits: Limits) -> Parsed:
    """Parsing is pure, so the listener's process can do it for the pipeline's. A mail that does not
    parse goes over with its ``ParseError``, which the pipeline keeps as the quarantine reason, so a
    costly failure is not paid twice; any other failure is left for the pipeline to meet again."""
    try:
        return parse(raw, limits)
    except ParseError as exc:
        return exc
    except Exception:
        return None


def _read_exactly(fd: int, size: int) -> bytearray:
    """The mail's bytes from the pipe, into one buffer of their size (no growing, no final copy)."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = os.readv(fd, [view[got : got + CHUNK]])
        if n == 0:
            raise EOFError("the daemon closed the pipe mid-mail")
        got += n
    return buffer


def log_levels() -> tuple[Format, int]:
    """serve's log settings, for a child to repeat (a spawned child starts with logging unconfigured)."""
    return logformat.settings()


def setup_child_logging(levels: tuple[Format, int]) -> None:
    """A spawned child starts with logging unconfigured; it writes to the inherited stderr like serve.

    It also ignores SIGTERM and SIGINT (a Ctrl-C reaches the whole process group, and so may a
    service manager's stop): serve stops its children in order, after the listeners, so that
    mail already taken in is committed and answered first.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logformat.configure(*levels)


def child_main(
    requests: Connection,
    results: Connection,
    config: Config,
    threads: int,
    max_batch: int,
    levels: tuple[Format, int],
    turns: Any,
) -> None:
    """The child: the pipeline behind a ``BatchWriter``, fed by the parent's pipe until it closes."""
    from mailgate.daemon.context import Holder, build_context, swap_config
    from mailgate.daemon.writer import BatchWriter

    setup_child_logging(levels)
    memory.return_big_blocks()
    try:
        ctx = build_context(config)  # the parent already upgraded the schema
    except Exception as exc:
        results.send(f"{exc!r}")
        return
    ctx.db.share_turns(turns, SLOTS["pipeline"])
    holder = Holder(ctx)
    send_lock = threading.Lock()

    def answer(item_id: int, future: Future[Result]) -> None:
        # OSError: the parent is gone and nobody waits; the commit stands and dedupe covers a retry
        with send_lock, contextlib.suppress(OSError):
            results.send((item_id, future.result()))

    writer = BatchWriter(holder.get, threads=threads, max_batch=max_batch)
    results.send("ready")
    while True:
        try:
            message = requests.recv()
        except (EOFError, OSError):
            break
        if message[0] == "mail":
            _, item_id, size, envelope, parsed = message
            try:
                raw = _read_exactly(requests.fileno(), size)
            except (EOFError, OSError):
                break
            writer.submit(raw, envelope, parsed).add_done_callback(partial(answer, item_id))
            del raw, parsed  # the writer holds them until stored
        elif message[0] == "config":
            swap_config(holder, message[1])
        else:
            break
    writer.close()
    ctx.db.dispose()
    results.close()
