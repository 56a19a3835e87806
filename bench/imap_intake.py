"""IMAP intake benchmark: one corpus through ``mailgate serve`` from a Dovecot INBOX, against two anchors.

    .venv/bin/python -m bench.imap_intake --messages 5000 --seed 1

- A private Dovecot (``tests/support/dovecot_fixture.py``) on loopback; the
  corpus from ``bench/corpus.py``, each mail prefixed with the ``Return-Path``
  and ``Delivered-To`` headers a local delivery adds, APPENDed to an INBOX
  before anything is timed.
- (m) ``python -m mailgate serve`` on a private copy of the demo config with
  one IMAP mailbox (``processed_folder: Processed``). Timed from "serve is
  ready" (its SMTP port answers; the poller starts with it) until Dovecot
  reports all mails in Processed and none in INBOX. Afterwards the SQLite file
  is read directly: inbound rows must equal the mails, else exit 1.
- (a) a plain imapclient loop on a second INBOX with the same mails: SEARCH,
  FETCH ``BODY.PEEK[]`` 100 UIDs at a time, MOVE them — the transfer limit.
- (b) a bare aiosmtpd listener answering 250 to the same corpus over SMTP
  (``bench/smtp_intake.py``'s target a, 8 clients) — the CPU anchor.
- (c), with ``--with-smtp``: ``mailgate serve`` taking the same corpus over
  SMTP (``bench/smtp_intake.py``'s target c), to tell the IMAP adapter's cost
  from the pipeline's.

Prints msg/s for each and the ratios m/b and m/a (and m/c). Everything lives in a
temporary directory that is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a file: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, count_rows, db_path, demo_config, free_port, machine, stop_popen, wait_for_smtp
from bench.corpus import Message, generate, summary
from bench.smtp_intake import bench_aiosmtpd, write_corpus
from bench.smtp_intake import bench_mailgate as bench_mailgate_smtp
from tests.support.dovecot_fixture import DovecotServer

DEADLINE = 900.0


def as_delivered(m: Message) -> bytes:
    """The mail as a local delivery agent leaves it in the mailbox."""
    return f"Return-Path: <{m.mail_from}>\r\nDelivered-To: {m.rcpt_tos[0]}\r\n".encode() + m.raw


def fill_inbox(dovecot: DovecotServer, user: str, mails: list[bytes]) -> float:
    started = time.monotonic()
    with dovecot.imap(user) as client:
        for i in range(0, len(mails), 250):
            client.multiappend("INBOX", mails[i : i + 250])
    return time.monotonic() - started


def counts(dovecot: DovecotServer, user: str) -> tuple[int, int]:
    with dovecot.imap(user) as client:
        done = client.folder_status("Processed", [b"MESSAGES"])[b"MESSAGES"] if client.folder_exists("Processed") else 0
        return int(client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]), int(done)


def bench_plain_imapclient(dovecot: DovecotServer, user: str, n: int, batch: int = 100) -> float:
    """(a): fetch and move, nothing else; returns msg/s."""
    with dovecot.imap(user) as client:
        client.create_folder("Processed")
        started = time.monotonic()
        client.select_folder("INBOX")
        uids = sorted(client.search(["NOT", "DELETED"]))
        fetched = 0
        for i in range(0, len(uids), batch):
            chunk = uids[i : i + batch]
            fetched += sum(1 for d in client.fetch(chunk, ["BODY.PEEK[]"]).values() if b"BODY[]" in d)
            client.move(chunk, "Processed")
        seconds = time.monotonic() - started
    if fetched != n or counts(dovecot, user) != (0, n):
        raise RuntimeError(f"(a) fetched {fetched} of {n}, folders {counts(dovecot, user)}")
    return n / seconds


def bench_mailgate(dovecot: DovecotServer, user: str, password: str, n: int, tmp: Path, batch: int) -> dict[str, Any]:
    """(m): returns msg/s and what the database holds afterwards."""
    folder = tmp / "mailgate-imap"
    port = free_port()
    config = demo_config(folder, port)
    main = yaml.safe_load(config.read_text())
    main["intake"]["imap"] = [{"name": "support", "host": dovecot.host, "port": dovecot.imap_port,
                               "security": "plain", "username": user, "password": password,
                               "processed_folder": "Processed", "batch_size": batch}]  # fmt: skip
    config.write_text(yaml.safe_dump(main, sort_keys=False))
    log = folder / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)  # fmt: skip
    try:
        wait_for_smtp(port, proc)
        started = time.monotonic()
        while counts(dovecot, user) != (0, n):
            if proc.poll() is not None or time.monotonic() - started > DEADLINE:
                raise RuntimeError(f"mailgate stopped or timed out:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        seconds = time.monotonic() - started
    finally:
        code = stop_popen(proc)
    text = log.read_text(errors="replace")
    if code != 0:
        print(f"warning: mailgate serve exited with {code}; log:\n{text[-3000:]}")
    problems = [line for line in text.splitlines() if "level=error" in line or " ERROR " in line or "Traceback" in line]
    return {"rate": n / seconds, "seconds": seconds, "rows": count_rows(db_path(folder)), "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100, help="mailgate's batch_size (UIDs per FETCH)")
    parser.add_argument("--clients", type=int, default=8, help="SMTP clients for (b)")
    parser.add_argument("--with-smtp", action="store_true", help="also time mailgate over SMTP (c)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # run the cleanup below on SIGTERM too
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-imap-"))
    dovecot = DovecotServer(tls=False, lmtp=False).start()
    try:
        messages = generate(args.messages, args.seed)
        mails = [as_delivered(m) for m in messages]
        print(machine())
        print(summary(messages))
        mg_user, mg_pw = dovecot.add_user()
        plain_user, _ = dovecot.add_user()
        for user in (mg_user, plain_user):
            print(f"appended {len(mails)} mails to {user}'s INBOX in {fill_inbox(dovecot, user, mails):.1f} s")

        plain = bench_plain_imapclient(dovecot, plain_user, len(mails))
        mg = bench_mailgate(dovecot, mg_user, mg_pw, len(mails), tmp, args.batch_size)
        corpus_file = tmp / "corpus.pickle"
        write_corpus(args.messages, args.seed, corpus_file)
        bare = bench_aiosmtpd("bare", "b) bare aiosmtpd", corpus_file, args.clients, tmp).rate
        smtp = bench_mailgate_smtp(corpus_file, args.clients, tmp)[0].rate if args.with_smtp else None

        print(f"\n{'target':<44}{'msg/s':>8}")
        print(f"{'m) mailgate serve, IMAP (ingested + moved)':<44}{mg['rate']:>8.0f}   ({mg['seconds']:.1f} s)")
        print(f"{'a) plain imapclient fetch + move':<44}{plain:>8.0f}")
        print(f"{'b) bare aiosmtpd, 250 only (SMTP)':<44}{bare:>8.0f}")
        if smtp:
            print(f"{'c) mailgate serve, SMTP (same corpus)':<44}{smtp:>8.0f}")
        print(f"ratio m/b = {mg['rate'] / bare:.3f}   ratio m/a = {mg['rate'] / plain:.3f}"
              + (f"   ratio m/c = {mg['rate'] / smtp:.3f}" if smtp else ""))  # fmt: skip
        rows = mg["rows"]
        ok = rows["inbound"] == len(mails) and rows["inbound_by_status"].get("quarantined", 0) == 0
        print(f"\n(m) database: {rows}")
        print(f"(m) tickets: {rows['tickets']} for {sum(m.kind == 'new' for m in messages)} new-ticket mails; "
              f"serve log: {len(mg['problems'])} ERROR/Traceback lines")  # fmt: skip
        print(f"(m) check: {rows['inbound']} inbound rows, none quarantined, for {len(mails)} mails -> "
              f"{'OK' if ok else 'MISMATCH'}")  # fmt: skip
    finally:
        dovecot.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
