"""uvicorn inside serve's event loop, on a socket serve bound before anything started.

uvicorn's own signal handling is switched off: serve owns SIGTERM and SIGHUP (a drain stops the
HTTP listener first, like the SMTP one, so no request is taken that could not be answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn


class _Embedded(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, app: Any, sock: socket.socket) -> None:
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                                date_header=True, timeout_graceful_shutdown=10, limit_concurrency=200,
                                proxy_headers=False, timeout_keep_alive=15)
        self._server = _Embedded(config)
        self._sock = sock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the HTTP listener stopped before it started")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop taking requests; those in flight finish (within uvicorn's graceful timeout)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await task


def bind(host: str, port: int) -> socket.socket:
    sock = socket.create_server((host, port), backlog=128)
    sock.setblocking(False)
    return sock
