"""The defects of the step-7 list that showed at the SMTP listener, reproduced through the real daemon.

``serve`` runs as a subprocess on a loopback port with its pipeline and sender processes; clients
are smtplib and raw sockets. Each test failed before its fix. Runs in about two minutes.
"""

from __future__ import annotations

import base64
import os
import smtplib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.common import process_family, rss_kib
from tests.conftest import (
    MakeConfig,
    Service,
    make_mail,
    smtp_deliver,
    sql_rows,
    start_service,
    wait_for_outgoing,
    wait_until,
)

WAIT = 180.0  # ceilings for a loaded machine; every wait ends on an event long before


@pytest.fixture
def serve(make_config: MakeConfig, tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def start(**main: Any) -> Service:
        svc = start_service(make_config(**main), tmp_path / f"serve-{len(started)}.log")
        started.append(svc)
        return svc

    yield start
    for svc in started:
        if svc.proc.poll() is None:
            svc.stop(timeout=WAIT)


# ----------------------------------------------------------------------------------------------- 4
def _flood_mail(n: int) -> bytes:
    addresses = ",\r\n ".join(f"user{i}@flood.example" for i in range(125_000))
    return (f"From: eve@evil.example\r\nTo: {addresses}\r\nSubject: flood {n}\r\nMessage-ID: <flood{n}@evil.example>"
            "\r\n\r\nhello\r\n").encode()


def test_4_mails_over_the_limits_are_kept_and_do_not_hold_up_others(serve: Any) -> None:
    svc = serve()
    answers: dict[str, tuple[int, str]] = {}

    def send(name: str, raw: bytes) -> None:
        answers[name] = smtp_deliver(svc.host, svc.port, raw, mail_from="eve@evil.example", timeout=WAIT)

    threads = [threading.Thread(target=send, args=(f"flood{n}", _flood_mail(n))) for n in range(3)]
    threads.append(threading.Thread(target=send, args=("ordinary", make_mail(message_id="<ok@customer.example>"))))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert {name: code for name, (code, _) in answers.items()} == {
        "flood0": 250, "flood1": 250, "flood2": 250, "ordinary": 250}
    kept = sql_rows(svc.config, "SELECT status, reason FROM inbound WHERE status = 'quarantined'")
    assert len(kept) == 3 and all("intake.limits" in reason for _, reason in kept), kept
    assert sql_rows(svc.config, "SELECT count(*) FROM ticket") == [(1,)]


# ----------------------------------------------------------------------------------------------- 6
def _big_mail(size: int) -> bytes:
    data = os.urandom(size * 3 // 4)
    return (b"From: Pat <pat@customer.example>\r\nTo: support@example.com\r\nSubject: big file\r\n"
            b"Message-ID: <big@customer.example>\r\n"
            b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\n'
            b"See attached.\r\n--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="dump.bin"\r\n\r\n'
            + base64.encodebytes(data).replace(b"\n", b"\r\n") + b"--zz--\r\n")


def _peak_growth(svc: Service, raw: bytes) -> tuple[dict[int, int], dict[int, int]]:
    """(each process's peak RSS growth in KiB while ``raw`` is stored, what each held before): after a
    first small mail whose acknowledgment is delivered, so every process has done its start-up work."""
    wait_until(lambda: "outbox sender in process" in svc.output(), timeout=WAIT, what="the child processes' log line")
    warm = make_mail(message_id=f"<warm-{len(raw)}@customer.example>")
    assert smtp_deliver(svc.host, svc.port, warm, timeout=WAIT)[0] == 250
    wait_for_outgoing(svc.config, 1, svc, timeout=WAIT)
    family = process_family(svc.proc.pid)
    before = {pid: rss_kib(pid, "VmRSS") for pid in family}
    for pid in family:  # reset each process's peak RSS to what it holds now
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    code, text = smtp_deliver(svc.host, svc.port, raw, timeout=WAIT)
    assert code == 250, text
    return {pid: rss_kib(pid, "VmHWM") - before[pid] for pid in family}, before


def _big_text(size: int) -> bytes:
    line = b"2026-03-02 10:00:00 worker-7 ERROR request failed: connection reset by peer (retrying)\r\n"
    return (b"From: Pat <pat@customer.example>\r\nTo: support@example.com\r\nSubject: big log\r\n"
            b"Message-ID: <big-log@customer.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + line * (size // len(line)))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak RSS")
def test_6_a_big_text_body_is_kept_whole_without_costing_its_size_many_times(serve: Any) -> None:
    """A 24 MiB pasted log cost 15 times its size over serve's processes (the parser's line list, three
    copies of the text, the agents' alert carrying all of it); now it is read around the parser, its
    first MiB is the message's text and the whole of it an attachment (measured: 4.0 times, summed)."""
    svc = serve()
    raw = _big_text(24 << 20)
    peaks, _before = _peak_growth(svc, raw)
    size_kib = len(raw) // 1024
    assert sum(peaks.values()) < 5 * size_kib, f"peak growth per process (KiB) {peaks} for a {size_kib} KiB mail"
    [(body,)] = sql_rows(svc.config, "SELECT body FROM message WHERE subject = 'big log'")
    assert len(body) < 1.1 * (1 << 20) and "the whole text is attached as message.txt" in body
    [(size,)] = sql_rows(svc.config, "SELECT size FROM attachment WHERE filename = 'message.txt'")
    assert size == len(raw.partition(b"\r\n\r\n")[2].replace(b"\r\n", b"\n"))  # all of it, line ends mended


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak RSS")
def test_6_one_big_mail_costs_less_than_four_times_its_size_and_memory_comes_back(serve: Any) -> None:
    svc = serve()
    raw = _big_mail(24 << 20)
    peaks, before = _peak_growth(svc, raw)
    family = list(before)
    size_kib = len(raw) // 1024
    assert sum(peaks.values()) < 4 * size_kib, f"peak growth per process (KiB) {peaks} for a {size_kib} KiB mail"

    def settled() -> bool:
        return sum(rss_kib(pid, "VmRSS") - before[pid] for pid in family) < size_kib

    wait_until(settled, timeout=WAIT, what="memory given back after the mail", log=svc.output)
    [(size,)] = sql_rows(svc.config, "SELECT size FROM attachment WHERE filename = 'dump.bin'")
    assert size == (24 << 20) * 3 // 4


def test_6_connections_over_the_cap_hear_421_and_come_back_later(serve: Any) -> None:
    svc = serve(intake={"smtp": {"max_connections": 3}})
    held = [socket.create_connection((svc.host, svc.port), timeout=WAIT) for _ in range(3)]
    try:
        for sock in held:
            assert sock.recv(3) == b"220"
        with socket.create_connection((svc.host, svc.port), timeout=WAIT) as extra:
            assert extra.recv(100).startswith(b"421 4.7.0")
    finally:
        held.pop().close()
    try:
        def admitted() -> bool:
            with socket.create_connection((svc.host, svc.port), timeout=WAIT) as again:
                return again.recv(3) == b"220"

        wait_until(admitted, timeout=WAIT, what="a connection admitted once one was closed")
    finally:
        for sock in held:
            sock.close()


def _dialogue(sock: socket.socket, *commands: bytes) -> list[bytes]:
    """Send commands one by one over a raw socket; return each reply's first line."""
    reader = sock.makefile("rb")
    replies = [reader.readline()]  # the greeting
    for command in commands:
        sock.sendall(command + b"\r\n")
        reply = reader.readline()
        while reply[3:4] == b"-":  # multi-line (EHLO)
            reply = reader.readline()
        replies.append(reply)
    return replies


def test_6_bytes_in_flight_over_the_cap_hear_451_before_sending_data(serve: Any) -> None:
    """A client that has sent 2 MiB of a mail holds 2 MiB in flight; with a 1 MiB cap the next DATA is
    refused with 451 before any data is sent, and the first mail is still taken once it ends."""
    svc = serve(intake={"smtp": {"max_bytes_in_flight": "1MiB"}})
    with socket.create_connection((svc.host, svc.port), timeout=WAIT) as first:
        replies = _dialogue(first, b"EHLO one.example", b"MAIL FROM:<pat@customer.example>",
                            b"RCPT TO:<support@example.com>", b"DATA")
        assert replies[-1].startswith(b"354"), replies
        first.sendall(b"From: pat@customer.example\r\nSubject: slow upload\r\n\r\n" + b"y" * 76 * 30000 + b"\r\n")
        refused: list[bytes] = []

        def next_data_refused() -> bool:
            with socket.create_connection((svc.host, svc.port), timeout=WAIT) as second:
                answer = _dialogue(second, b"EHLO two.example", b"MAIL FROM:<kim@customer.example>",
                                   b"RCPT TO:<support@example.com>", b"DATA")[-1]
                if answer.startswith(b"354"):  # the first mail's bytes not all read yet: finish this one
                    second.sendall(make_mail("meanwhile", sender="kim@customer.example") + b".\r\n")
                    second.makefile("rb").readline()
                    return False
                refused.append(answer)
                return True

        wait_until(next_data_refused, timeout=WAIT, what="a DATA refused while 2 MiB are in flight")
        assert refused[0].startswith(b"451 4.3.1"), refused
        first.sendall(b".\r\n")
        assert first.makefile("rb").readline().startswith(b"250")
    [(count,)] = sql_rows(svc.config, "SELECT count(*) FROM ticket WHERE subject = 'slow upload'")
    assert count == 1


# ----------------------------------------------------------------------------------------------- 9
@pytest.mark.parametrize("length", [5000, 2 << 20])
def test_9_long_lines_are_stored_whole_not_refused(serve: Any, length: int) -> None:
    svc = serve()
    line = "x" * length
    raw = (f"From: pat@customer.example\r\nTo: support@example.com\r\nSubject: long line\r\n"
           f"Message-ID: <long{length}@customer.example>\r\n\r\nbefore\r\n{line}\r\n.dot first\r\nafter\r\n").encode()
    code, text = smtp_deliver(svc.host, svc.port, raw, timeout=WAIT)
    assert code == 250, text
    [(stored,)] = sql_rows(svc.config, "SELECT raw FROM inbound_raw")
    assert bytes(stored) == raw


# ----------------------------------------------------------------------------------------------- 10
def test_10_recipients_beyond_the_cap_hear_452(serve: Any) -> None:
    svc = serve(intake={"smtp": {"max_recipients": 5}})
    with smtplib.SMTP(svc.host, svc.port, timeout=WAIT) as client:
        client.ehlo("client.example")
        client.mail("pat@customer.example")
        codes = [client.rcpt(f"support+{i}@example.com")[0] for i in range(7)]
        assert codes == [250] * 5 + [452, 452]
        code, _ = client.data(make_mail(message_id="<capped@customer.example>"))
        assert code == 250
