"""What the HTTP handlers need of the running daemon, handed to the app once (no globals).

Mail from these channels goes to the same writer as SMTP's, so it is stored and logged alike, and a
caller is answered only after the commit: a 201 means stored, and an outage is a 503 with nothing
half-kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailgate.domain import Envelope, Outcome, RawMail, Source
from mailgate.errors import TempFail
from mailgate.intake import channel
from mailgate.pipeline.ingest import Context

Result = Outcome | TempFail
Submit = Callable[[RawMail, Envelope], Awaitable[Result]]


@dataclass(frozen=True)
class Runtime:
    context: Callable[[], Context]  # the current snapshot (a reload swaps it)
    submit: Submit


async def file(runtime: Runtime, entry: channel.Entry, source: Source, peer: str = "") -> channel.Filed:
    """Compose, store through the writer, and say what became of it. ``channel.Invalid`` for bad input
    (nothing stored); ``TempFail`` when it could not be stored now (nothing stored, try again)."""
    ctx = runtime.context()
    # composing encodes the attachments (half a second for 10 MiB): not on the loop that also serves SMTP
    raw, env, mid = await asyncio.to_thread(channel.prepared, entry, ctx, source, ctx.clock.now(), peer)
    result = await runtime.submit(raw, env)
    if isinstance(result, TempFail):
        raise result
    return channel.filed(result, mid)
