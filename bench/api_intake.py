"""HTTP API intake next to SMTP intake, in one run: the same new tickets by mail and by ``POST /api/v1/tickets``.

    .venv/bin/python -m bench.api_intake --tickets 2000 --clients 8 --seed 1

- The tickets are the new-ticket mails of ``bench/corpus.py`` (deterministic from the seed). By
  SMTP each is sent as it is; by the API each becomes ``{requester, subject, body}`` (the From, the
  Subject and the plain text of the same mail).
- Targets, each a separate server process on fresh loopback ports, run one after the other (ratios:
  d/c the API against SMTP, c/a and d/b each against its bare listener):
  (a) bare aiosmtpd answering 250;  (b) a bare FastAPI app on uvicorn answering 201 to the same JSON
  (its request model validated, nothing stored);  (c) ``mailgate serve`` (demo config, its own
  SQLite file) fed the mails by SMTP;  (d) a fresh ``mailgate serve`` fed the JSON by the API.
- The clients run in a separate process: ``--clients`` persistent connections each (SMTP: EHLO once,
  then MAIL/RCPT/DATA; HTTP/1.1 keep-alive, a hand-written client so the client's cost stays small).
- Throughput = requests / (last answer - first request); latency per request from the client; CPU
  seconds of the server process and its children (the pipeline process) from /proc, per request.
- After (c) and (d) the SQLite file is read: every 250/201 must be a stored inbound row and a ticket,
  else the run exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import pickle
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a file: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bare_http
from bench.common import REPO, db_path, demo_config, free_port, machine, stop_popen, wait_for_smtp
from bench.corpus import generate
from bench.smtp_intake import Figures, _percentile, bench_aiosmtpd, cpu_seconds, run_clients

TIMEOUT = 600


@dataclass
class HttpResult:
    sent: int = 0
    codes: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    first_send: float = 0.0
    last_reply: float = 0.0
    cpu: float = 0.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next((int(h.split(":", 1)[1]) for h in lines[1:] if h.lower().startswith("content-length:")), 0)
    if length:
        await reader.readexactly(length)
    return status


async def _http_worker(port: int, key: str, bodies: list[bytes], result: HttpResult) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            request = (f"POST /api/v1/tickets HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            started = time.perf_counter()
            if not result.first_send:
                result.first_send = started
            writer.write(request)
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                result.errors.append(repr(exc))
                return
            done = time.perf_counter()
            result.sent += 1
            result.codes[status] = result.codes.get(status, 0) + 1
            result.latencies.append(done - started)
            result.last_reply = done
    finally:
        writer.close()


def http_client_main(bodies_file: str, port: int, key: str, clients: int, out: Any) -> None:
    import resource

    with open(bodies_file, "rb") as fh:
        bodies: list[bytes] = pickle.load(fh)
    result = HttpResult()
    shares = [bodies[i::clients] for i in range(clients)]

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(*(_http_worker(port, key, s, result) for s in shares if s)), TIMEOUT)

    asyncio.run(run())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu = usage.ru_utime + usage.ru_stime
    out.send(result)


def run_http_clients(bodies_file: Path, port: int, key: str, clients: int, name: str, server_pid: int) -> Figures:
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=http_client_main, args=(str(bodies_file), port, key, clients, send))
    before = cpu_seconds(server_pid)
    proc.start()
    try:
        if not receive.poll(TIMEOUT + 60):
            raise TimeoutError("HTTP clients did not finish")
        result: HttpResult = receive.recv()
        server_cpu = cpu_seconds(server_pid) - before
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    lat = result.latencies
    ok = sum(n for code, n in result.codes.items() if 200 <= code < 300)
    return Figures(name, result.sent, ok, result.last_reply - result.first_send, _percentile(lat, 0.5) * 1e3,
                   _percentile(lat, 0.99) * 1e3, dict(result.codes), result.errors, result.cpu, server_cpu)


def _wait_http(port: int, proc: Any, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = proc.poll() is None if hasattr(proc, "poll") else proc.is_alive()
        if not alive:
            raise RuntimeError("the HTTP server exited before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def bench_bare_http(bodies_file: Path, clients: int) -> Figures:
    port = free_port()
    proc = mp.get_context("spawn").Process(target=bare_http.main, args=(port,))
    proc.start()
    try:
        _wait_http(port, proc)
        return run_http_clients(bodies_file, port, "-", clients, "b) bare FastAPI 201", proc.pid or 0)
    finally:
        proc.terminate()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _mailgate(folder: Path, key: str) -> tuple[Path, int, int]:
    smtp_port, http_port = free_port(), free_port()
    config = demo_config(folder, smtp_port)
    main = yaml.safe_load(config.read_text())
    main["http"] = {"listen": f"127.0.0.1:{http_port}",
                    "api_keys": [{"name": "bench", "sha256": hashlib.sha256(key.encode()).hexdigest(),
                                  "scopes": ["create"], "rate": "1000000/1m"}]}
    config.write_text(yaml.safe_dump(main, sort_keys=False))
    return config, smtp_port, http_port


def bench_mailgate(label: str, folder: Path, key: str, run: Any) -> tuple[Figures, tuple[int, int]]:
    config, smtp_port, http_port = _mailgate(folder, key)
    log = folder / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for_smtp(smtp_port, proc)
        _wait_http(http_port, proc)
        figures: Figures = run(smtp_port, http_port, proc.pid)
    finally:
        code = stop_popen(proc)
    if code != 0:
        print(f"warning: {label}: serve exited with {code}; end of its log:\n{log.read_text(errors='replace')[-2000:]}")
    with sqlite3.connect(db_path(folder)) as conn:
        inbound = conn.execute("SELECT count(*) FROM inbound").fetchone()[0]
        tickets = conn.execute("SELECT count(*) FROM ticket").fetchone()[0]
    figures.name = label
    return figures, (inbound, tickets)


def api_bodies(messages: list[Any]) -> list[bytes]:
    parser = BytesParser(policy=policy.default)
    bodies = []
    for m in messages:
        mail = parser.parsebytes(m.raw)
        part = mail.get_body(("plain", "html"))
        text = part.get_content() if part is not None else ""
        bodies.append(json.dumps({"requester": str(mail["From"]), "subject": str(mail["Subject"] or "(none)"),
                                  "body": text.strip() or "(empty)"}).encode())
    return bodies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-api-"))
    ok = True
    try:
        corpus = [m for m in generate(args.tickets * 3, args.seed) if m.kind == "new"][: args.tickets]
        corpus_file, bodies_file = tmp / "corpus.pickle", tmp / "bodies.pickle"
        items = []  # the file format of bench.smtp_intake's clients
        for m in corpus:
            data = m.raw if m.raw.endswith(b"\r\n") else m.raw + b"\r\n"
            data = data.replace(b"\r\n.", b"\r\n..")
            items.append((m.mail_from, m.rcpt_tos, (b"." + data if data.startswith(b".") else data) + b".\r\n"))
        corpus_file.write_bytes(pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))
        bodies_file.write_bytes(pickle.dumps(api_bodies(corpus), protocol=pickle.HIGHEST_PROTOCOL))
        n = len(corpus)
        print(machine())
        print(f"{n} new tickets, {args.clients} clients")
        key = "mg_" + secrets.token_urlsafe(32)
        rows = [bench_aiosmtpd("bare", "a) bare aiosmtpd", corpus_file, args.clients, tmp),
                bench_bare_http(bodies_file, args.clients)]
        smtp, smtp_rows = bench_mailgate(
            "c) mailgate by SMTP", tmp / "c", key,
            lambda s, h, pid: run_clients(corpus_file, s, args.clients, "c", pid))
        api, api_rows = bench_mailgate(
            "d) mailgate by API", tmp / "d", key,
            lambda s, h, pid: run_http_clients(bodies_file, h, key, args.clients, "d", pid))
        rows += [smtp, api]
        print(f"\n{'target':<24}{'sent':>6}{'ok':>6}{'seconds':>9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'srv CPU ms/req':>16}{'cli CPU ms/req':>16}")
        for f in rows:
            per = 1e3 / max(1, f.sent)
            print(f"{f.name:<24}{f.sent:>6}{f.ok:>6}{f.seconds:>9.2f}{f.rate:>8.0f}{f.p50_ms:>8.2f}{f.p99_ms:>8.2f}"
                  f"{f.server_cpu * per:>16.2f}{f.client_cpu * per:>16.2f}")
        by = {f.name[0]: f for f in rows}
        for num, den in (("d", "c"), ("c", "a"), ("d", "b")):
            wall = by[num].rate / by[den].rate if by[den].rate else 0.0
            per_cpu = (by[den].server_cpu / by[den].sent) / (by[num].server_cpu / by[num].sent or 1e-9)
            print(f"ratio {num}/{den} = {wall:.3f}   (per server CPU-second: {per_cpu:.3f})")
        for label, figures, (inbound, tickets) in (("c", smtp, smtp_rows), ("d", api, api_rows)):
            good = figures.ok == n == inbound == tickets
            ok = ok and good
            print(f"({label}) check: {figures.ok} accepted of {n}, {inbound} inbound rows, {tickets} tickets -> "
                  f"{'OK' if good else 'MISMATCH'} {figures.codes if not good else ''}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
