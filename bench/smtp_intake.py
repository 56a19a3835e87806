"""SMTP intake benchmark: the same corpus against (a) bare aiosmtpd, (b) a naive listener, (c) ``mailgate serve``.

    .venv/bin/python -m bench.smtp_intake --messages 5000 --clients 8 --seed 1

- The corpus comes from ``bench/corpus.py`` (deterministic from the seed).
- The clients run in a separate process (multiprocessing, spawn): one asyncio
  loop with ``--clients`` concurrent SMTP connections to 127.0.0.1, each
  sending EHLO once and then MAIL/RCPT/DATA per message in corpus order
  (persistent connections, like an MTA's connection cache).
- Every target is a separate server process on a fresh loopback port:
  (a) bare aiosmtpd whose handler only answers 250;
  (b) naive: aiosmtpd, ``asyncio.to_thread`` parse with ``email`` +
      ``policy.default`` and one SQLite commit per message (WAL,
      ``synchronous=FULL``), raw bytes stored;
  (c) ``python -m mailgate serve`` on a private copy of the demo config
      (``bench/common.py:demo_config``), its own SQLite file and Maildir.
- Throughput = messages / (last 250 reply - first MAIL command); latency is
  client-side per message from sending ``DATA`` to the final reply. CPU
  seconds of the server process (all threads, from /proc) and of the client
  process are reported per message; the ratios are also given per server
  CPU-second, which is far less sensitive to other load on the machine.
- After (c) the SQLite file is read directly: inbound rows must equal the
  messages sent, else the run exits 1.

Everything lives in a temporary directory that is removed at the end, with
every child process stopped (``--keep`` keeps the directory for inspection).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a file: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO,
    count_rows,
    db_path,
    demo_config,
    free_port,
    machine,
    not_accepted,
    stop_popen,
    wait_for_smtp,
)
from bench.corpus import Message, generate, summary

HOST = "127.0.0.1"
CLIENT_TIMEOUT = 600.0


# --------------------------------------------------------------------------- client (its own process)
@dataclass
class ClientResult:
    sent: int = 0
    first_send: float = 0.0
    last_reply: float = 0.0
    latencies: list[float] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    cpu: float = 0.0  # CPU seconds of the client process


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed by server")
        if line[3:4] != b"-":
            return int(line[:3])


class _Sender:
    """Shared work list; each connection takes the next message in corpus order."""

    def __init__(self, items: list[tuple[str, tuple[str, ...], bytes]], port: int) -> None:
        self.items, self.port, self.next = items, port, 0
        self.result = ClientResult(latencies=[0.0] * len(items))

    async def connection(self) -> None:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        try:
            await _reply(reader)
            writer.write(b"EHLO bench-client.example\r\n")
            await _reply(reader)
            while self.next < len(self.items):
                i, self.next = self.next, self.next + 1
                await self._one(reader, writer, i)
            writer.write(b"QUIT\r\n")
            await writer.drain()
            await _reply(reader)
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        mail_from, rcpts, data = self.items[i]
        body = " BODY=8BITMIME" if not data.isascii() else ""
        if not self.result.first_send:
            self.result.first_send = time.perf_counter()
        writer.write(f"MAIL FROM:<{mail_from}>{body}\r\n".encode())
        code = await _reply(reader)
        for rcpt in rcpts:
            writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            code = max(code, await _reply(reader))
        if code >= 400:
            self.result.codes[code] += 1
            writer.write(b"RSET\r\n")
            await _reply(reader)
            return
        start = time.perf_counter()
        writer.write(b"DATA\r\n")
        code = await _reply(reader)
        if code != 354:
            self.result.codes[code] += 1
            writer.write(b"RSET\r\n")
            await _reply(reader)
            return
        writer.write(data)
        await writer.drain()
        code = await _reply(reader)
        end = time.perf_counter()
        self.result.latencies[i] = end - start
        self.result.codes[code] += 1
        self.result.sent += 1
        if code == 250:
            self.result.last_reply = max(self.result.last_reply, end)


async def _run_clients(items: list[tuple[str, tuple[str, ...], bytes]], port: int, clients: int) -> ClientResult:
    sender = _Sender(items, port)
    cpu = time.process_time()
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(sender.connection() for _ in range(clients)), return_exceptions=True), CLIENT_TIMEOUT
    )
    sender.result.errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    sender.result.cpu = time.process_time() - cpu
    return sender.result


def client_main(corpus_file: str, port: int, clients: int, out: Any) -> None:
    with open(corpus_file, "rb") as fh:
        items = pickle.load(fh)
    try:
        result = asyncio.run(_run_clients(items, port, clients))
    except BaseException as exc:  # report, never hang the parent
        result = ClientResult(errors=[repr(exc)])
    out.send(result)
    out.close()


# --------------------------------------------------------------------------- servers (a) and (b)
class BareHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK"


class NaiveHandler:
    """Parse with policy.default in a thread, one INSERT + COMMIT per message at synchronous=FULL."""

    def __init__(self, path: Path) -> None:
        self.parser = BytesParser(policy=policy.default)
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS inbound (id INTEGER PRIMARY KEY, received_at REAL, mail_from TEXT,"
            " rcpt_tos TEXT, message_id TEXT, subject TEXT, from_addr TEXT, in_reply_to TEXT, body TEXT, raw BLOB)"
        )
        self.lock = threading.Lock()

    def store(self, raw: bytes, mail_from: str, rcpts: list[str]) -> None:
        msg = self.parser.parsebytes(raw)
        part = msg.get_body(("plain", "html"))
        text = part.get_content() if part is not None else ""
        row = (time.time(), mail_from, ",".join(rcpts), str(msg["message-id"] or ""), str(msg["subject"] or ""),
               str(msg["from"] or ""), str(msg["in-reply-to"] or ""), text, raw)
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("INSERT INTO inbound (received_at, mail_from, rcpt_tos, message_id, subject, from_addr,"
                              " in_reply_to, body, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            self.conn.execute("COMMIT")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            await asyncio.to_thread(self.store, envelope.original_content or envelope.content, envelope.mail_from,
                                    list(envelope.rcpt_tos))
        except Exception as exc:
            return f"451 4.3.0 {type(exc).__name__}"
        return "250 2.0.0 Stored"


async def _serve(handler: Any, port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await loop.create_server(  # the same SMTP options as mailgate's listener
        lambda: SMTP(handler, data_size_limit=25 * 1024 * 1024, enable_SMTPUTF8=True, hostname="bench.example"),
        host=HOST, port=port, reuse_address=True,
    )
    await stop.wait()
    server.close()


def server_main(kind: str, port: int, db: str) -> None:
    import logging

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    handler = BareHandler() if kind == "bare" else NaiveHandler(Path(db))
    asyncio.run(_serve(handler, port))


# --------------------------------------------------------------------------- orchestration
@dataclass
class Figures:
    name: str
    sent: int
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    codes: dict[int, int]
    errors: list[str]
    client_cpu: float = 0.0
    server_cpu: float = 0.0  # CPU seconds of the server process during the client run

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _children(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its live child processes (serve's ingest
    process), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in _children(pid))


def run_clients(corpus_file: Path, port: int, clients: int, name: str, server_pid: int) -> Figures:
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=client_main, args=(str(corpus_file), port, clients, send), name=f"clients-{name}")
    server_cpu = cpu_seconds(server_pid)
    proc.start()
    try:
        if not receive.poll(CLIENT_TIMEOUT + 60):
            raise TimeoutError("clients did not finish")
        result: ClientResult = receive.recv()
        server_cpu = cpu_seconds(server_pid) - server_cpu
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    lat = [x for x in result.latencies if x > 0]
    return Figures(name, result.sent, result.codes.get(250, 0), result.last_reply - result.first_send,
                   _percentile(lat, 0.5) * 1e3, _percentile(lat, 0.99) * 1e3, dict(result.codes), result.errors,
                   result.cpu, server_cpu)


def bench_aiosmtpd(kind: str, name: str, corpus_file: Path, clients: int, tmp: Path) -> Figures:
    port = free_port()
    proc = mp.get_context("spawn").Process(target=server_main, args=(kind, port, str(tmp / f"{kind}.db")))
    proc.start()
    try:
        wait_for_smtp(port, proc)
        return run_clients(corpus_file, port, clients, name, proc.pid or 0)
    finally:
        if proc.pid is not None and proc.is_alive():
            proc.terminate()  # SIGTERM: the server closes and exits
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()


def bench_mailgate(
    corpus_file: Path, clients: int, tmp: Path, label: str = "c) mailgate serve", extra: dict[str, Any] | None = None
) -> tuple[Figures, dict[str, Any], str, str | None]:
    port = free_port()
    folder = tmp / label.split(")")[0]
    config = demo_config(folder, port)
    if extra:  # e.g. the logging level, metrics: the same daemon, one setting apart
        main = yaml.safe_load(config.read_text())
        main.update(extra)
        config.write_text(yaml.safe_dump(main, sort_keys=False))
    log = folder / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for_smtp(port, proc)
        figures = run_clients(corpus_file, port, clients, label, proc.pid)
    finally:
        code = stop_popen(proc)
    if code != 0:  # e.g. -9: SIGTERM did not end it within 60 s; show the tail of its log without the noise
        tail = [line for line in log.read_text(errors="replace").splitlines() if "skipped: maximum" not in line]
        print(f"warning: mailgate serve exited with {code}; end of its log:\n" + "\n".join(tail[-8:]))
    rows = count_rows(db_path(folder))
    return figures, rows, log.read_text(errors="replace"), not_accepted(rows, db_path(folder))


def tiny_corpus(n: int) -> list[Message]:
    """Three-header, one-line mails: the shape behind DESIGN's "bare aiosmtpd ~3,500 msg/s" (client calibration)."""
    return [Message(f"From: c{i}@tiny.example\r\nSubject: hi {i}\r\nMessage-ID: <{i}@tiny.example>\r\n\r\n"
                    f"hello\r\n".encode(), f"c{i}@tiny.example", ("support@example.com",), "new",
                    f"<{i}@tiny.example>", "plain", "us-ascii") for i in range(n)]


def write_corpus(n: int, seed: int, path: Path, tiny: bool = False) -> list[Any]:
    messages = tiny_corpus(n) if tiny else generate(n, seed)
    items = []
    for m in messages:
        data = m.raw if m.raw.endswith(b"\r\n") else m.raw + b"\r\n"
        data = data.replace(b"\r\n.", b"\r\n..")
        data = (b"." + data if data.startswith(b".") else data) + b".\r\n"
        items.append((m.mail_from, m.rcpt_tos, data))
    with path.open("wb") as fh:
        pickle.dump(items, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return messages


def print_table(rows: list[Figures]) -> None:
    print(f"\n{'target':<24}{'sent':>6}{'250s':>6}{'seconds':>9}{'msg/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'srv CPU ms/msg':>16}{'cli CPU ms/msg':>16}")
    for f in rows:
        per = 1e3 / max(1, f.sent)
        print(f"{f.name:<24}{f.sent:>6}{f.ok:>6}{f.seconds:>9.2f}{f.rate:>8.0f}{f.p50_ms:>8.2f}{f.p99_ms:>8.2f}"
              f"{f.server_cpu * per:>16.2f}{f.client_cpu * per:>16.2f}")
        if f.errors or set(f.codes) - {250}:
            print(f"{'':<24}codes {f.codes} errors {f.errors[:3]}")
    by = {f.name[0]: f for f in rows}
    for num, den in (("c", "a"), ("c", "b"), ("b", "a"), ("c", "d"), ("e", "c")):
        if num in by and den in by and by[den].rate:
            wall = by[num].rate / by[den].rate
            per_cpu = (by[den].server_cpu / by[den].sent) / (by[num].server_cpu / by[num].sent or 1e-9)
            print(f"ratio {num}/{den} = {wall:.3f}   (per server CPU-second: {per_cpu:.3f})")


def verify(figures: Figures, rows: dict[str, Any], n: int, new_tickets: int, log: str, warning: str | None) -> bool:
    print(f"\n(c) database: {rows}")
    if warning:
        print(f"(c) {warning}")
    problems = [line for line in log.splitlines() if "level=error" in line or " ERROR " in line or "Traceback" in line]
    warnings = [line for line in log.splitlines() if "level=warning" in line or " WARNING " in line]
    print(f"(c) tickets: {rows['tickets']} created for {new_tickets} new-ticket mails in the corpus "
          f"({'every reply threaded' if rows['tickets'] == new_tickets else 'some replies opened tickets'}); "
          f"serve log: {len(problems)} ERROR/Traceback, {len(warnings)} WARNING lines")
    for line in (problems + warnings)[:2]:
        print(f"    e.g. {line[:200]}")
    ok = bool(rows["inbound"] == n == figures.ok)
    print(f"(c) check: {figures.ok} x 250 for {n} sent, {rows['inbound']} inbound rows -> {'OK' if ok else 'MISMATCH'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default="abc", help="any of a, b, c (default abc)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--tiny", action="store_true", help="tiny one-line mails instead of the corpus (calibration)")
    parser.add_argument("--observe", action="store_true",
                        help="also run mailgate with per-mail log lines off (d) and with metrics on (e)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # run the cleanup below on SIGTERM too
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-smtp-"))
    ok = True
    try:
        corpus_file = tmp / "corpus.pickle"
        messages = write_corpus(args.messages, args.seed, corpus_file, args.tiny)
        print(machine())
        print(summary(messages))
        rows: list[Figures] = []
        if "a" in args.targets:
            rows.append(bench_aiosmtpd("bare", "a) bare aiosmtpd", corpus_file, args.clients, tmp))
        if "b" in args.targets:
            rows.append(bench_aiosmtpd("naive", "b) naive parse+commit", corpus_file, args.clients, tmp))
        if "c" in args.targets:
            figures, counts, log, warning = bench_mailgate(corpus_file, args.clients, tmp)
            rows.append(figures)
        if args.observe:
            quiet = {"logging": {"format": "logfmt", "level": "warning"}}
            rows.append(bench_mailgate(corpus_file, args.clients, tmp, "d) mailgate, no per-mail log", quiet)[0])
            watched = {"metrics": {"listen": f"127.0.0.1:{free_port()}"}}
            rows.append(bench_mailgate(corpus_file, args.clients, tmp, "e) mailgate, log + metrics", watched)[0])
        print_table(rows)
        if "c" in args.targets:
            ok = verify(figures, counts, args.messages, sum(m.kind == "new" for m in messages), log, warning)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
