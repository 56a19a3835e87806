"""Start-up and stop figures an admin feels: the CLI's read-only commands, and serve's start and SIGTERM.

- CLI: ``mailgate --version``, ``tickets list``, ``outbox list``, ``explain`` and ``report`` on the demo
  config with a database of ``--tickets`` tickets, each run ``--runs`` times as a fresh process
  (wall time from exec to exit, median and max).
- serve: from exec to the SMTP greeting, and from SIGTERM to exit, idle, ``--runs`` times each; and
  from SIGTERM to exit under load (four SMTP clients sending the whole time), with a check that every
  mail answered 250 is stored.

    .venv/bin/python -m bench.startup --runs 7 --tickets 200
"""

from __future__ import annotations

import argparse
import shutil
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import yaml

from bench.common import REPO, db_path, demo_config, machine, wait_for_smtp

COMMANDS = [
    ("--version",),
    ("tickets", "list"),
    ("outbox", "list"),
    ("explain", "id:1"),
    ("report",),
]


def _run(config: Path, args: tuple[str, ...]) -> float:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "mailgate", *args] + ([] if args == ("--version",) else ["-c", str(config)])
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _fill(config: Path, tickets: int) -> None:
    mails = b"".join(
        f"From MAILER-DAEMON Mon Mar  2 10:00:00 2026\nFrom: c{i}@customer.example\nTo: support@example.com\n"
        f"Subject: Case {i}\nMessage-ID: <b{i}@customer.example>\nDate: Mon, 02 Mar 2026 10:00:00 +0000\n\n"
        f"Help number {i}.\n\n".encode()
        for i in range(tickets)
    )
    mbox = config.parent / "fill.mbox"
    mbox.write_bytes(mails)
    subprocess.run([sys.executable, "-m", "mailgate", "ingest", "--history", "-q", str(mbox), "-c", str(config)],
                   cwd=REPO, check=True)


def _serve_cycle(config: Path) -> tuple[float, float]:
    port = yaml.safe_load(config.read_text())["intake"]["smtp"]["listen"].rpartition(":")[2]
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_smtp(int(port), proc)
        ready = time.perf_counter() - started
        time.sleep(1.0)  # idle
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        return ready, time.perf_counter() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _client(port: int, stop: threading.Event, acked: list[str], n: int) -> None:
    i = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                while not stop.is_set():
                    mid = f"<load-{n}-{i}@customer.example>"
                    i += 1
                    smtp.sendmail(f"c{n}@customer.example", ["support@example.com"],
                                  f"From: c{n}@customer.example\r\nTo: support@example.com\r\nSubject: Load {i}\r\n"
                                  f"Message-ID: {mid}\r\n\r\n{'Help. ' * 300}\r\n".encode())
                    acked.append(mid)
        except (OSError, smtplib.SMTPException):  # the listener closed: serve is stopping
            return


def _stop_under_load(config: Path) -> tuple[float, int, int]:
    port = int(yaml.safe_load(config.read_text())["intake"]["smtp"]["listen"].rpartition(":")[2])
    proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop, acked = threading.Event(), []
    clients = [threading.Thread(target=_client, args=(port, stop, acked, n)) for n in range(4)]
    try:
        wait_for_smtp(port, proc)
        for thread in clients:
            thread.start()
        time.sleep(3.0)
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        took = time.perf_counter() - stopping
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with closing(sqlite3.connect(db_path(config.parent.parent))) as db:
        stored = {row[0] for row in db.execute("SELECT message_id FROM inbound")}
    return took, len(acked), len(set(acked) - stored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tickets", type=int, default=200)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-startup-"))
    try:
        config = demo_config(tmp)
        subprocess.run([sys.executable, "-m", "mailgate", "db", "upgrade", "-c", str(config)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        _fill(config, args.tickets)
        print(machine())
        print(f"{'command':<28}{'median s':>10}{'max s':>8}")
        for command in COMMANDS:
            times = [_run(config, command) for _ in range(args.runs)]
            print(f"{'mailgate ' + ' '.join(command):<28}{statistics.median(times):>10.3f}{max(times):>8.3f}")
        cycles = [_serve_cycle(config) for _ in range(args.runs)]
        for name, values in (("serve: exec to 220", [c[0] for c in cycles]),
                             ("serve: SIGTERM to exit", [c[1] for c in cycles])):
            print(f"{name:<28}{statistics.median(values):>10.3f}{max(values):>8.3f}")
        loaded = [_stop_under_load(config) for _ in range(args.runs)]
        times = [t for t, _, _ in loaded]
        print(f"{'serve: SIGTERM under load':<28}{statistics.median(times):>10.3f}{max(times):>8.3f}"
              f"   ({sum(a for _, a, _ in loaded)} mails answered 250, {sum(lost for *_, lost in loaded)} of them"
              " not stored)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
