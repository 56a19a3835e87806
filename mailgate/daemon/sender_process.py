"""Deliver the outbox from a child process that yields the CPU to intake.

Composing and handing over an acknowledgment costs about as much CPU as taking in
the mail that caused it. In ``serve``'s own interpreter that work would delay the
SMTP dialogue of every client (one interpreter lock); here it runs in a process
of its own at a lower scheduling priority, so during a burst intake comes first
and the outbox catches up in the gaps, and at other times mail goes out at once.
The rows are the durable queue: the child claims them as any sender does, so a
child that dies only leaves leases to expire, and it is started again on the
next wake-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from multiprocessing.connection import Connection
from typing import Any

from mailgate.config import Config
from mailgate.daemon import memory
from mailgate.daemon.ingest_process import SLOTS, SPAWN, log_levels, setup_child_logging
from mailgate.logformat import Format, log_event

log = logging.getLogger(__name__)
NICENESS = 19  # intake first: CFS gives deliveries ~1.5 % of a busy core, and every idle moment


class SenderProcess:
    def __init__(self, config: Config, *, turns: Any) -> None:
        self._config = config
        self._turns = turns
        self._lock = threading.Lock()
        self._closed = False
        self._conn, self._proc = self._start()

    def _start(self) -> tuple[Connection, Any]:
        child_end, our_end = SPAWN.Pipe(duplex=False)  # (receive-only, send-only)
        args = (child_end, self._config, log_levels(), self._turns)
        proc = SPAWN.Process(target=sender_main, args=args, name="mailgate-sender", daemon=True)
        proc.start()
        child_end.close()
        return our_end, proc

    @property
    def pid(self) -> int:
        return int(self._proc.pid)

    def alive(self) -> bool:
        return bool(self._proc.is_alive())

    def _post(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if self._closed:
                return
            if not self._proc.is_alive():  # died (a bug, the OOM killer): the rows wait in the database
                log.error("the outbox sender process died (exit code %s); restarting it", self._proc.exitcode)
                self._conn.close()
                self._conn, self._proc = self._start()
            with contextlib.suppress(OSError):
                self._conn.send(message)

    def wake(self) -> None:
        """New rows may be due: flush now rather than at the next interval."""
        self._post(("wake",))

    def reconfigure(self, config: Config) -> None:
        self._config = config
        self._post(("config", config))

    def close(self, timeout: float = 30.0) -> None:
        """Let the running flush finish its current batch, then stop."""
        self._post(("stop",))
        with self._lock:
            self._closed = True
        self._proc.join(timeout)
        if self._proc.is_alive():
            log.error("the outbox sender did not stop in time; killing it (its leased rows are retried)")
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()


def lower_priority(niceness: int = NICENESS) -> bool:
    """Intake first: the sender runs at a lower CPU priority. Where that is refused (a seccomp filter
    without setpriority), it says so once and sends at normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError as exc:
        log_event(log, "priority not lowered", logging.WARNING, process="outbox sender", niceness=niceness,
                  error=exc.strerror or str(exc), hint="allow setpriority (SystemCallFilter=setpriority)")
        return False
    return True


def sender_main(conn: Connection, config: Config, levels: tuple[Format, int], turns: Any) -> None:
    from mailgate.daemon.context import Holder, build_context, build_transport, swap_config
    from mailgate.daemon.scheduler import Jobs

    setup_child_logging(levels)
    memory.return_big_blocks()
    lower_priority()
    holder = Holder(build_context(config))
    holder.get().db.share_turns(turns, SLOTS["sender"])
    jobs = Jobs(holder.get, lambda: build_transport(holder.get().config))
    wake = threading.Event()

    def listen() -> None:  # in a thread, so that "stop" reaches a flush that is draining a backlog
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the daemon is gone
                message = ("stop",)
            if message[0] == "config":
                swap_config(holder, message[1])
            elif message[0] == "stop":
                jobs.stopping.set()
                wake.set()
                return
            wake.set()

    threading.Thread(target=listen, name="mailgate-sender-listen", daemon=True).start()
    while not jobs.stopping.is_set():
        _run(jobs)
        wake.wait(holder.get().config.main.scheduler.outbox_interval.total_seconds())
        wake.clear()
    holder.get().db.dispose()


def _run(jobs: Any) -> None:
    from mailgate.errors import TempFail

    try:
        jobs.flush_outbox()
    except TempFail as exc:  # the database busy with a burst of intake: the next wake-up retries
        log.warning("outbox flush postponed: %s", exc)
    except Exception:
        log.exception("outbox flush failed")
