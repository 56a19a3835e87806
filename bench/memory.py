"""Peak memory per big mail: how much RSS one mail of ``--size`` MiB adds, by shape and by way in.

Shapes: a base64 attachment (the common big mail), a text/plain body of that size, an HTML body of that
size. Ways in:

- SMTP to serve (its three processes): each process's peak RSS is reset (``/proc/PID/clear_refs``)
  after a warm-up mail, the big mail is sent, and the growth of each peak over what it held before is
  summed once the 250 has come back; the target is under 4x the mail's size, summed.
- ``mailgate ingest FILE`` handed to that serve: the same sum over serve's processes, plus the ingest
  process's own peak (ru_maxrss) less that of an ingest of a tiny mail.
- ``mailgate ingest --direct FILE``: the ingest process's peak less that of a tiny mail's.

    .venv/bin/python -m bench.memory --size 25
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.common import REPO, demo_config, machine, process_family, rss_kib, wait_for_smtp


def _head(subject: str, n: int, content_type: str) -> bytes:
    return (f"From: Pat <pat@customer.example>\r\nTo: support@example.com\r\nSubject: {subject} {n}\r\n"
            f"Message-ID: <mem-{n}-{time.time_ns()}@customer.example>\r\nContent-Type: {content_type}\r\n").encode()


def attachment(size: int, n: int) -> bytes:
    data = os.urandom(size * 3 // 4)
    return (_head("big file", n, 'multipart/mixed; boundary="zz"') + b"\r\n--zz\r\nContent-Type: text/plain\r\n\r\n"
            b"See attached.\r\n--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="dump.bin"\r\n\r\n'
            + base64.encodebytes(data).replace(b"\n", b"\r\n") + b"--zz--\r\n")


def text_body(size: int, n: int) -> bytes:
    line = b"2026-03-02 10:00:00 worker-7 ERROR request failed: connection reset by peer (retrying)\r\n"
    return _head("big log", n, "text/plain; charset=utf-8") + b"\r\n" + line * (size // len(line))


def html_body(size: int, n: int) -> bytes:
    row = b"<tr><td>2026-03-02 10:00:00</td><td>worker-7</td><td><b>ERROR</b> connection reset</td></tr>\r\n"
    return (_head("big report", n, "text/html; charset=utf-8") + b"\r\n<html><body><table>\r\n"
            + row * (size // len(row)) + b"</table></body></html>\r\n")


SHAPES: dict[str, Callable[[int, int], bytes]] = {"attachment": attachment, "text": text_body, "html": html_body}


def _peak_over_family(pid: int, send: Callable[[], object]) -> tuple[int, list[int]]:
    """(summed peak growth KiB over serve's processes, each process's: listener, then its children)."""
    family = process_family(pid)
    before = {p: rss_kib(p, "VmRSS") for p in family}
    for p in family:
        Path(f"/proc/{p}/clear_refs").write_text("5")
    send()
    peaks = [max(0, rss_kib(p, "VmHWM") - before[p]) for p in family]
    return sum(peaks), peaks


def _ingest_peak(config: Path, raw: bytes, *extra: str) -> int:
    """Peak RSS (KiB) of one ``mailgate ingest`` process storing ``raw`` from a file."""
    with tempfile.NamedTemporaryFile(suffix=".eml") as fh:
        fh.write(raw)
        fh.flush()
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "ingest", "-q", *extra, "-c", str(config),
                                 fh.name], cwd=REPO, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(f"ingest exited {proc.returncode}: {err}")
        return int(usage.ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=25, help="MiB per mail")
    args = parser.parse_args()
    size = args.size << 20
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_config(Path(tmp))
        main_cfg = yaml.safe_load(config.read_text())
        main_cfg["intake"]["smtp"]["max_message_size"] = f"{args.size * 2}MiB"
        config.write_text(yaml.safe_dump(main_cfg, sort_keys=False))
        port = int(main_cfg["intake"]["smtp"]["listen"].rsplit(":", 1)[1])
        subprocess.run([sys.executable, "-m", "mailgate", "db", "upgrade", "-c", str(config)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        tiny = text_body(2000, 0)
        # the direct path on a database of its own: the acknowledgments it queues must not reach serve's sender
        direct_config = demo_config(Path(tmp) / "direct")
        direct_cfg = yaml.safe_load(direct_config.read_text())
        direct_cfg["intake"]["smtp"]["max_message_size"] = f"{args.size * 2}MiB"
        direct_config.write_text(yaml.safe_dump(direct_cfg, sort_keys=False))
        subprocess.run([sys.executable, "-m", "mailgate", "db", "upgrade", "-c", str(direct_config)], cwd=REPO,
                       check=True, stdout=subprocess.DEVNULL)
        direct_base = _ingest_peak(direct_config, tiny, "--direct")
        results: list[str] = []
        for shape, make in SHAPES.items():
            raw = make(size, 1)
            kib = len(raw) // 1024
            direct = _ingest_peak(direct_config, raw, "--direct") - direct_base
            results.append(f"  {shape:<10} ingest --direct: {direct / kib:4.1f}x")
        serve = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)], cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_smtp(port, serve)
            state = Path(main_cfg["state_dir"])
            while not (state / "intake.sock").exists():
                time.sleep(0.05)
            with smtplib.SMTP("127.0.0.1", port, timeout=600) as client:
                client.sendmail("pat@customer.example", ["support@example.com"], tiny)
            handoff_base = _ingest_peak(config, tiny)
            time.sleep(2)  # the warm-up mail's acknowledgment is sent; every process has done its start-up
            for i, make in enumerate(SHAPES.values()):
                raw = make(size, 10 + i)
                kib = len(raw) // 1024

                def smtp(raw: bytes = raw) -> None:
                    with smtplib.SMTP("127.0.0.1", port, timeout=600) as client:
                        client.sendmail("pat@customer.example", ["support@example.com"], raw)

                total, each = _peak_over_family(serve.pid, smtp)
                time.sleep(2)
                piped = make(size, 20 + i)
                handed: list[int] = []

                def hand(piped: bytes = piped, handed: list[int] = handed) -> None:
                    handed.append(_ingest_peak(config, piped))

                total_h, _ = _peak_over_family(serve.pid, hand)
                client_growth = handed[0] - handoff_base
                shares = "+".join(f"{k / kib:.1f}" for k in each if k > kib // 20)
                results[i] += (f", SMTP to serve: {total / kib:4.1f}x summed ({shares} by process)"
                               f", ingest handed to serve: {total_h / kib:4.1f}x in serve + "
                               f"{client_growth / kib:.1f}x in ingest")
                time.sleep(2)
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=120)
    print(f"peak RSS growth per {args.size} MiB mail, as a multiple of its size (target: under 4x summed):")
    print("\n".join(results))


if __name__ == "__main__":
    main()
