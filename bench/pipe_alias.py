"""CPU per mail of the README's MTA pipe alias (``"|mailgate ingest"``): what an MTA pays per delivery.

Each round runs one ``mailgate ingest`` of one small mail on stdin as a fresh process and reads the
child's CPU time (user + system, from wait4), median over ``--runs`` runs, in four settings:

- ``handoff``: serve is running on the demo config; ingest hands the mail over its socket.
- ``direct``: no daemon; ingest stores the mail itself (``--direct`` with a daemon running gives the same).
- ``floor``: a minimal Python script that reads stdin and exits (what any Python pipe costs).
- serve's own CPU per handed-over mail (its three processes, from /proc), as the other half of the bill.

    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -m bench.pipe_alias --runs 9
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import REPO, demo_config, machine, wait_for_smtp


def _mail(i: int) -> bytes:
    return (f"From: c{i}@customer.example\r\nTo: support@example.com\r\nSubject: Printer {i}\r\n"
            f"Message-ID: <pipe-{i}-{time.time_ns()}@customer.example>\r\n\r\nIt is on fire ({i}).\r\n").encode()


def _run_cpu(cmd: list[str], stdin: bytes) -> float:
    """CPU seconds of one child, measured with wait4 (Popen must not reap it first)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: stdin from the pipe, exec the command
        os.close(write)
        os.dup2(read, 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.chdir(REPO)
        os.execv(cmd[0], cmd)
    os.close(read)
    os.write(write, stdin)
    os.close(write)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}")
    return float(usage.ru_utime + usage.ru_stime)


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children, from /proc (clock ticks)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _children(pid: int) -> list[int]:
    try:
        found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [c for child in found for c in (child, *_children(child))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_config(Path(tmp))
        state = Path(yaml.safe_load(config.read_text())["state_dir"])
        ingest = [sys.executable, "-m", "mailgate", "ingest", "-q", "-c", str(config)]
        subprocess.run([sys.executable, "-m", "mailgate", "db", "upgrade", "-c", str(config)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        figures: dict[str, list[float]] = {"floor": [], "direct": [], "handoff": []}
        n = 0
        for _ in range(args.runs):
            figures["floor"].append(_run_cpu([sys.executable, "-c", "import sys; sys.stdin.buffer.read()"],
                                             _mail(n)))
            n += 1
            figures["direct"].append(_run_cpu(ingest, _mail(n)))
            n += 1
        port = int(yaml.safe_load(config.read_text())["intake"]["smtp"]["listen"].rsplit(":", 1)[1])
        serve = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)], cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_smtp(port, serve)
            deadline = time.monotonic() + 60
            while not (state / "intake.sock").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            _run_cpu(ingest, _mail(n))  # the daemon's first mail warms its caches
            n += 1
            before = _tree_cpu(serve.pid)
            for _ in range(args.runs):
                figures["handoff"].append(_run_cpu(ingest, _mail(n)))
                n += 1
            time.sleep(1.5)  # the sender's answers to these mails (acks queued) are the daemon's work too
            daemon_per_mail = (_tree_cpu(serve.pid) - before) / args.runs
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=120)
    print(f"CPU per mail, median of {args.runs} runs (min-max):")
    for name, values in figures.items():
        print(f"  {name:<8} {statistics.median(values) * 1000:7.0f} ms  "
              f"({min(values) * 1000:.0f}-{max(values) * 1000:.0f})")
    print(f"  serve's own CPU per handed-over mail (all three processes, idle ticks included): "
          f"{daemon_per_mail * 1000:.0f} ms")
    print(f"  direct / handoff: {statistics.median(figures['direct']) / statistics.median(figures['handoff']):.1f}x")


if __name__ == "__main__":
    main()
