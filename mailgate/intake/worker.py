"""A named daemon thread that can be asked to stop: what each IMAP poller and watchdog runs in."""

from __future__ import annotations

import threading


class Worker:
    """Subclasses implement ``_run`` and poll ``self._stop``; ``join`` says whether the thread ended."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread.ident is None:  # never started (serve refused to start first): nothing to wait for
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
