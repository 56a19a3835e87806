"""APScheduler 3.x as an in-process ticker: a fixed set of interval jobs, no job store to share.

The database holds all durable state (outbox rows with ``next_attempt_at``),
so every daemon may tick; claims in the database make the work happen once.
Jobs are sync functions run in APScheduler's thread pool, with
``max_instances=1`` and ``coalesce=True`` so a slow tick never piles up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mailgate.errors import TempFail
from mailgate.jobs import lifecycle, retention, sla_sweep
from mailgate.outbound import outbox
from mailgate.outbound.dkim import DkimSigner
from mailgate.outbound.transport import Transport
from mailgate.pipeline.ingest import Context

log = logging.getLogger(__name__)


class Jobs:
    def __init__(self, context: Callable[[], Context], transport: Callable[[], Transport]) -> None:
        self._context = context
        self._transport = transport
        self.stopping = threading.Event()  # set on shutdown: a draining job stops after its current batch
        self.flushing = threading.Event()  # set while flush_outbox runs, so wake-ups do not pile up

    def flush_outbox(self) -> outbox.FlushResult:
        ctx = self._context()
        total = outbox.FlushResult()
        self.flushing.set()
        try:
            return self._drain(ctx, total)
        finally:
            self.flushing.clear()

    def _drain(self, ctx: Context, total: outbox.FlushResult) -> outbox.FlushResult:
        main = ctx.config.main
        while not self.stopping.is_set():  # drain what is due now, one claimed batch at a time
            result = outbox.flush(
                ctx.db,
                self._transport(),
                ctx.clock,
                main.outbound.retry,
                ctx.identity,
                main.scheduler.batch_size,
                ctx.blobs,
                DkimSigner(main.outbound.dkim).sign if main.outbound.dkim else None,
                lease=main.outbound.lease,
                stopping=self.stopping,
            )
            total = outbox.FlushResult(
                total.sent + result.sent, total.retried + result.retried, total.failed + result.failed
            )
            if result.sent + result.retried + result.failed < main.scheduler.batch_size:
                return total
        return total

    def context(self) -> Context:
        return self._context()

    def auto_close(self) -> int:
        """Auto-close, auto-resolve and reminders: the lifecycle jobs that run on the same tick."""
        return lifecycle.run_all(self._context())

    def sla_sweep(self) -> int:
        return sla_sweep.sweep(self._context(), stop=self.stopping)

    def retention(self) -> retention.Report:
        return retention.run(self._context(), stop=self.stopping)


class RunningScheduler:
    def __init__(self, scheduler: AsyncIOScheduler, jobs: Jobs) -> None:
        self._scheduler = scheduler
        self._jobs = jobs

    def wake_outbox(self) -> None:
        job = self._scheduler.get_job("flush_outbox")
        if job is not None and not self._jobs.flushing.is_set():  # a running flush will see the new rows
            job.modify(next_run_time=datetime.now(UTC))

    async def stop(self) -> None:
        """Stop ticking and let a running job finish its current batch (it checks ``stopping``)."""
        self._jobs.stopping.set()
        self._scheduler.pause()  # no new runs; shutting down under a running job would cancel its future
        await asyncio.to_thread(self._wait_idle)
        self._scheduler.shutdown(wait=False)

    def _wait_idle(self, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while self._jobs.flushing.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)


def _safe(name: str, func: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            func()
        except TempFail as exc:  # e.g. the database busy with a burst of intake: the next tick retries
            log.warning("scheduled job %s postponed: %s", name, exc)
        except Exception:  # one failed tick must not kill the job; the next tick retries
            log.exception("scheduled job %s failed", name)

    return run


def start_scheduler(
    jobs: Jobs,
    outbox_interval: timedelta,
    sla_interval: timedelta | None = None,
    flush: Callable[[], object] | None = None,
) -> RunningScheduler:
    """``flush`` replaces the in-process outbox flush (serve's sender process: then it only wakes that)."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    sla_interval = sla_interval or jobs.context().config.main.scheduler.sla_interval
    jobs_and_intervals = (  # first run of each at start: a daemon that was down catches up at once
        ("sla_sweep", jobs.sla_sweep, sla_interval),
        ("flush_outbox", flush or jobs.flush_outbox, outbox_interval),
        ("auto_close", jobs.auto_close, timedelta(minutes=5)),
        ("retention", jobs.retention, jobs.context().config.main.retention.run_every),
    )
    for name, func, every in jobs_and_intervals:
        scheduler.add_job(
            _safe(name, func),
            "interval",
            id=name,
            seconds=every.total_seconds(),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
    scheduler.start()
    return RunningScheduler(scheduler, jobs)
