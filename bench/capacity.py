"""Capacity: the mail rate one or two daemons sustain with 20 IMAP mailboxes plus SMTP, and what it means a day.

    .venv/bin/python -m bench.capacity --targets sqlite pg pg2 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

For each target (``sqlite``: one daemon on SQLite; ``pg``: one daemon on PostgreSQL; ``pg2``: two
daemons on one PostgreSQL, sharing the mailboxes by lease and the SMTP load by round robin), a fresh
database and a private Dovecot with ``--mailboxes`` users. Load is offered open-loop at a rate R
(mails/s) for ``--seconds``: half over SMTP (paced clients, new connection per mail like separate MTAs,
latency from DATA to the 250), half appended to the mailboxes round robin (pick-up latency from the
APPEND to the mail's commit, read from ``inbound.processed_at``). The corpus is ``bench/corpus.py``'s
realistic mix; acknowledgments and SLA alerts go to a Maildir. A rate is **sustained** when the
offered mail was all taken, SMTP p99 and IMAP pick-up p99 stay under 1 s, and the outbox is empty
within ``--drain`` seconds after the load stops (every ack delivered). R starts at ``--start`` and
grows by ``--factor`` until a rate fails; the last rate that held is the capacity, times 86,400 a day.

``--stuck`` adds one more mailbox whose server accepts the connection and never answers (a hung IMAP
server), to show that the other mailboxes' pick-up does not suffer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, demo_config, free_port, machine, stop_popen, wait_for_smtp
from bench.corpus import Message, generate
from tests.support.dovecot_fixture import DovecotServer


@dataclass
class Step:
    rate: float
    offered: int
    smtp_sent: int
    smtp_p50: float
    smtp_p99: float
    imap_sent: int
    imap_stored: int
    imap_p50: float
    imap_p99: float
    drained_in: float | None  # seconds after the load until the outbox was empty; None: it was not
    acks: int

    @property
    def held(self) -> bool:
        return (self.smtp_sent + self.imap_stored == self.offered and self.smtp_p99 < 1.0 and self.imap_p99 < 1.0
                and self.drained_in is not None)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Silent:
    """A TCP server that accepts and never says a word: an IMAP server that hangs."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[Any] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def database(kind: str, folder: Path, base_url: str | None) -> tuple[str, Any]:
    """A fresh database: a SQLite file, or a PostgreSQL schema of its own (and how to drop it)."""
    if kind == "sqlite":
        return f"sqlite:///{folder / 'state' / 'mailgate.db'}", lambda: None
    assert base_url, "--database-url is needed for the PostgreSQL targets"
    schema = f"cap_{secrets.token_hex(4)}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()

    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{schema}", drop


def configs(folder: Path, url: str, daemons: int, mailboxes: list[dict[str, Any]]) -> list[Path]:
    base = demo_config(folder)
    settings = yaml.safe_load(base.read_text())
    settings["database"] = {"url": url}
    settings["intake"]["imap"] = mailboxes
    settings["security"] = {**(settings.get("security") or {}), "secret_file": str(folder / "secret")}
    settings["scheduler"] = {**(settings.get("scheduler") or {}), "outbox_interval": "1s"}
    made = []
    for n in range(daemons):
        settings["cluster"] = {"name": f"cap{n}", "lease_time": "10s"}
        settings["state_dir"] = str(folder / f"state{n}" if n else folder / "state")
        settings["intake"]["smtp"]["listen"] = f"127.0.0.1:{free_port()}"
        path = base.with_name(f"cap{n}.yaml")
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        made.append(path)
    return made


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    port = int(yaml.safe_load(config.read_text())["intake"]["smtp"]["listen"].rsplit(":", 1)[1])
    wait_for_smtp(port, proc, timeout=120)
    return proc


def settled(config: Path, mailboxes: int, daemons: int, timeout: float = 120) -> None:
    """Until every mailbox is held and no daemon holds more than its share: with two daemons the first
    takes everything and hands half over when the second appears, which is not what is measured."""
    share = -(-mailboxes // daemons)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-m", "mailgate", "status", "--json", "-c", str(config)],
                             capture_output=True, cwd=REPO, check=True).stdout
        holders = [m["holder"] for m in json.loads(out)["mailboxes"]]
        if all(holders) and max(holders.count(h) for h in holders) <= share and len(set(holders)) == daemons:
            return
        time.sleep(0.5)
    raise SystemExit(f"the mailboxes were not shared out within {timeout:.0f} s")


def as_delivered(m: Message) -> bytes:
    return f"Return-Path: <{m.mail_from}>\r\nDelivered-To: {m.rcpt_tos[0]}\r\n".encode() + m.raw


def offer(rate: float, seconds: float, mails: Any, ports: list[int], dovecot: DovecotServer,
          users: list[tuple[str, str]]) -> tuple[list[float], dict[str, float], int]:
    """Half of ``rate`` over SMTP (a new connection each, round robin over ``ports``), half appended to
    the mailboxes round robin; returns SMTP latencies, IMAP append times by Message-ID, mails offered."""
    smtp_latency: list[float] = []
    appended: dict[str, float] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    turn = itertools.count()

    def smtp_client(interval: float, offset: float) -> None:
        due = time.monotonic() + offset
        while due < stop_at:
            time.sleep(max(0.0, due - time.monotonic()))
            with lock:
                m = next(mails)
            port = ports[next(turn) % len(ports)]
            started = time.monotonic()
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    client.sendmail(m.mail_from, m.rcpt_tos, m.raw)
                with lock:
                    smtp_latency.append(time.monotonic() - started)
            except (smtplib.SMTPException, OSError):
                pass
            due += interval

    def imap_appender(interval: float) -> None:
        connections = [dovecot.imap(user).__enter__() for user, _ in users]
        due = time.monotonic()
        for n in itertools.count():
            if due >= stop_at:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            with lock:
                m = next(mails)
            connections[n % len(connections)].append("INBOX", as_delivered(m))
            appended[m.message_id] = time.time()
            due += interval
        for client in connections:
            client.logout()

    clients = 4
    per_client = (rate / 2) / clients
    threads = [threading.Thread(target=smtp_client, args=(1 / per_client, i / (per_client * clients)))
               for i in range(clients)]
    threads.append(threading.Thread(target=imap_appender, args=(2 / rate,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    offered = len(smtp_latency) + len(appended)
    return smtp_latency, appended, offered


def stored_at(engine: sa.Engine, ids: list[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    with engine.connect() as conn:
        for i in range(0, len(ids), 500):
            rows = conn.execute(sa.text("SELECT message_id, processed_at FROM inbound WHERE message_id IN :ids")
                                .bindparams(sa.bindparam("ids", expanding=True)), {"ids": ids[i:i + 500]}).all()
            for mid, when in rows:
                if isinstance(when, str):
                    when = datetime.fromisoformat(when)
                if when is not None:
                    found[mid] = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return found


def pending(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM outbox WHERE status <> 'sent'")).scalar_one())


def run_step(rate: float, args: argparse.Namespace, mails: Any, ports: list[int], dovecot: DovecotServer,
             users: list[tuple[str, str]], engine: sa.Engine) -> Step:
    latency, appended, offered = offer(rate, args.seconds, mails, ports, dovecot, users)
    ids = list(appended)
    deadline = time.monotonic() + 60
    found: dict[str, float] = {}
    while time.monotonic() < deadline:
        found = stored_at(engine, ids)
        if len(found) == len(ids):
            break
        time.sleep(0.5)
    pickup = [found[mid] - appended[mid] for mid in found]
    load_end = time.monotonic()
    drained = None
    while time.monotonic() - load_end < args.drain:
        if pending(engine) == 0:
            drained = round(time.monotonic() - load_end, 1)
            break
        time.sleep(0.5)
    with engine.connect() as conn:
        acks = int(conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one())
    return Step(rate, offered, len(latency), percentile(latency, 0.5), percentile(latency, 0.99), len(ids),
                len(found), percentile(pickup, 0.5), percentile(pickup, 0.99), drained, acks)


def bench_target(kind: str, args: argparse.Namespace, dovecot: DovecotServer, corpus: list[Message]) -> list[Step]:
    folder = Path(tempfile.mkdtemp(prefix=f"mailgate-capacity-{kind}-"))
    url, drop = database("sqlite" if kind == "sqlite" else "pg", folder, args.database_url)
    users = [dovecot.add_user() for _ in range(args.mailboxes)]
    boxes = [{"name": f"box{i}", "host": dovecot.host, "port": dovecot.imap_port, "security": "plain",
              "username": u, "password": p, "processed_folder": "Processed", "poll_interval": "30s"}
             for i, (u, p) in enumerate(users)]
    silent = Silent() if args.stuck else None
    if silent is not None:
        boxes.append({"name": "hung", "host": "127.0.0.1", "port": silent.port, "security": "plain",
                      "username": "hung", "password": "x", "timeout": "10s"})
    paths = configs(folder, url, 2 if kind == "pg2" else 1, boxes)
    procs: list[subprocess.Popen[bytes]] = []
    steps: list[Step] = []
    try:
        for path in paths:
            procs.append(start(path, folder / "serve.log"))
        ports = [int(yaml.safe_load(p.read_text())["intake"]["smtp"]["listen"].rsplit(":", 1)[1]) for p in paths]
        settled(paths[0], len(boxes), len(paths))
        engine = sa.create_engine(url)
        mails = itertools.cycle(corpus)
        rate = args.start
        for _ in range(args.max_steps):
            step = run_step(rate, args, mails, ports, dovecot, users, engine)
            steps.append(step)
            print_step(kind, step)
            if not step.held:
                break
            rate = round(rate * args.factor, 1)
        engine.dispose()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            stop_popen(proc)
        if silent is not None:
            silent.close()
        drop()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return steps


def print_step(kind: str, s: Step) -> None:
    drained = f"{s.drained_in:.1f} s" if s.drained_in is not None else "NOT drained"
    print(f"{kind:<7} {s.rate:>6.1f}/s  offered {s.offered:>5}  smtp p50 {s.smtp_p50 * 1e3:>6.0f} ms p99 "
          f"{s.smtp_p99 * 1e3:>6.0f} ms  imap {s.imap_stored:>5}/{s.imap_sent:<5} pick-up p50 "
          f"{s.imap_p50 * 1e3:>6.0f} ms p99 {s.imap_p99 * 1e3:>6.0f} ms  outbox {s.acks:>6} rows, {drained}  "
          f"{'held' if s.held else 'FAILED'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["sqlite"], choices=["sqlite", "pg", "pg2"])
    parser.add_argument("--database-url")
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--start", type=float, default=10.0)
    parser.add_argument("--factor", type=float, default=1.5)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--drain", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stuck", action="store_true", help="add a mailbox whose server never answers")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    print(machine())
    corpus = generate(20000, args.seed)
    dovecot = DovecotServer().start()
    results: dict[str, list[Step]] = {}
    try:
        for kind in args.targets:
            results[kind] = bench_target(kind, args, dovecot, corpus)
    finally:
        dovecot.stop()
    print()
    for kind, steps in results.items():
        held = [s for s in steps if s.held]
        best = held[-1] if held else None
        if best is None:
            print(f"{kind:<7} no rate held (lowest tried {steps[0].rate}/s)")
            continue
        print(f"{kind:<7} sustained {best.rate:.1f} mails/s = {best.rate * 86400:,.0f} mails a day "
              f"(smtp p99 {best.smtp_p99 * 1e3:.0f} ms, imap pick-up p99 {best.imap_p99 * 1e3:.0f} ms, "
              f"outbox drained {best.drained_in} s after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
