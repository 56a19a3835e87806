"""APScheduler 3.x as an in-process ticker: a fixed set of interval jobs, no job store to share.

The database holds all durable state (outbox rows with ``next_attempt_at``),
so every daemon may tick; claims in the database make the work happen once.
Jobs are sync functions run in APScheduler's thread pool, with
``max_instances=1`` and ``coalesce=True`` so a slow tick never piles up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mailgate import lifecycle, outbox
from mailgate.adapters.smtp_out import Transport
from mailgate.pipeline.ingest import Context

log = logging.getLogger(__name__)


class Jobs:
    def __init__(self, context: Callable[[], Context], transport: Callable[[], Transport]) -> None:
        self._context = context
        self._transport = transport

    def flush_outbox(self) -> outbox.FlushResult:
        ctx = self._context()
        main = ctx.config.main
        total = outbox.FlushResult()
        while True:  # drain what is due now, one claimed batch at a time
            result = outbox.flush(
                ctx.db,
                self._transport(),
                ctx.clock,
                main.outbound.retry,
                ctx.identity.loop_value,
                main.scheduler.batch_size,
            )
            total = outbox.FlushResult(
                total.sent + result.sent, total.retried + result.retried, total.failed + result.failed
            )
            if result.sent + result.retried + result.failed < main.scheduler.batch_size:
                return total

    def auto_close(self) -> int:
        return lifecycle.auto_close(self._context())


class RunningScheduler:
    def __init__(self, scheduler: AsyncIOScheduler) -> None:
        self._scheduler = scheduler

    def wake_outbox(self) -> None:
        job = self._scheduler.get_job("flush_outbox")
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    async def stop(self) -> None:
        self._scheduler.shutdown(wait=False)
        await asyncio.sleep(0)


def _safe(name: str, func: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            func()
        except Exception:  # one failed tick must not kill the job; the next tick retries
            log.exception("scheduled job %s failed", name)

    return run


def start_scheduler(jobs: Jobs, outbox_interval: timedelta) -> RunningScheduler:
    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        _safe("flush_outbox", jobs.flush_outbox),
        "interval",
        id="flush_outbox",
        seconds=outbox_interval.total_seconds(),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        next_run_time=datetime.now(UTC),
    )
    scheduler.add_job(
        _safe("auto_close", jobs.auto_close),
        "interval",
        id="auto_close",
        seconds=300,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    return RunningScheduler(scheduler)
