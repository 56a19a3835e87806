"""Group commit: adapters hand mails to writer threads that store them in batches.

One SQLite commit at ``synchronous=FULL`` costs an fsync; sharing it among
all mails that arrived meanwhile is what lets a durable listener keep up.
Every mail still gets its own savepoint (see ``pipeline/ingest.py``), and
every caller is answered only after the commit that holds its mail.
SQLite gets one writer thread (one writer at a time anyway); PostgreSQL a few.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from mailgate.domain import Envelope, Outcome, RawMail
from mailgate.errors import TempFail
from mailgate.metrics import COMMIT_BATCH
from mailgate.pipeline.ingest import Context, Parsed, ingest_batch

log = logging.getLogger(__name__)

Result = Outcome | TempFail
_Item = tuple[bytes, Envelope, "Future[Result]", Parsed]
_STOP = object()


class BatchWriter:
    def __init__(
        self,
        context: Callable[[], Context],
        *,
        threads: int = 1,
        max_batch: int = 64,
        on_commit: Callable[[list[Result]], None] | None = None,
    ) -> None:
        self._context = context
        self._queue: queue.Queue[object] = queue.Queue()
        self._max_batch = max_batch
        self._closed = False
        self._on_commit = on_commit
        self._threads = [
            threading.Thread(target=self._run, name=f"mailgate-writer-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, raw: RawMail, envelope: Envelope, parsed: Parsed = None) -> Future[Result]:
        """``parsed``: ``parse(raw)`` (or its ``ParseError``) when the caller already did it, elsewhere."""
        future: Future[Result] = Future()
        if self._closed:
            future.set_result(TempFail("shutting down"))
            return future
        self._queue.put((raw, envelope, future, parsed))
        return future

    def submit_async(self, raw: RawMail, envelope: Envelope) -> asyncio.Future[Result]:
        """For the event loop; not a coroutine, so no frame of ours keeps the mail's bytes while it waits."""
        return asyncio.wrap_future(self.submit(raw, envelope))

    def _take_batch(self, first: _Item) -> tuple[list[_Item], bool]:
        batch, stop = [first], False
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)  # type: ignore[arg-type]
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._take_batch(first)  # type: ignore[arg-type]
            items: list[tuple[RawMail, Envelope]] = []
            try:
                items = [(raw, env) for raw, env, _, _ in batch]
                results = ingest_batch(items, self._context(), [parsed for *_, parsed in batch])
                COMMIT_BATCH.observe(len(batch))
            except Exception as exc:  # a bug in commit itself: the sources keep their mail
                log.exception("batch of %d failed before commit", len(batch))
                results = [TempFail(f"internal error: {exc!r}")] * len(batch)
            for (_, _, future, _), result in zip(batch, results, strict=True):
                future.set_result(result)
            if self._on_commit is not None:
                try:
                    self._on_commit(results)
                except Exception:  # a failed wake-up must not kill the thread every listener depends on
                    log.exception("after-commit hook failed")
            del first, batch, items  # the mails' bytes: not kept alive until the next batch comes
            if stop:
                return

    def close(self, timeout: float | None = None) -> None:
        """Finish everything already queued, then stop the threads (each waited for up to ``timeout``:
        a batch still committing then finishes, or not, as the process exits; its sources retry)."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
