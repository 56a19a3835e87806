"""Pipe intake benchmark: the bench corpus as one mbox, timed through ``mailgate ingest``.

    .venv/bin/python -m bench.ingest_mbox --messages 5000 --seed 1

The corpus (``bench/corpus.py``) is written to an mbox in a temporary
directory, a private copy of the demo config is migrated beforehand
(``mailgate db upgrade``, untimed), then

    python -m mailgate ingest -q -c CFG corpus.mbox

is timed as a user would run it (one process: interpreter start, config
load, every message, exit). ``--clients N`` (default 1) instead splits the
corpus into N mboxes ingested by N concurrent processes on the same
database, like an MTA running several pipe deliveries at once. The fixed
cost of one ``mailgate ingest`` process is measured separately on a
one-message mbox in a second config, so the per-message rate can be given
with and without it. Inbound rows must equal the messages, else exit 1.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, count_rows, db_path, demo_config, machine, not_accepted
from bench.corpus import generate, summary, write_mbox

TIMEOUT = 1800


def _mailgate(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailgate", *args]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_ingest(config: Path, mboxes: list[Path]) -> tuple[float, float, list[int]]:
    """Run one ``mailgate ingest`` per mbox concurrently; (wall seconds, CPU seconds, exit codes)."""
    subprocess.run(_mailgate("db", "upgrade", "-c", str(config)), check=True, cwd=REPO, capture_output=True)
    cpu, start = _children_cpu(), time.perf_counter()
    procs = [subprocess.Popen(_mailgate("ingest", "-q", "-c", str(config), str(m)), cwd=REPO,
                              stderr=subprocess.PIPE) for m in mboxes]
    codes = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=TIMEOUT)
            codes.append(proc.returncode)
            if proc.returncode != 0:
                print(err.decode(errors="replace")[-2000:], file=sys.stderr)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return time.perf_counter() - start, _children_cpu() - cpu, codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=1, help="concurrent ingest processes (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-mbox-"))
    try:
        messages = generate(args.messages, args.seed)
        print(machine())
        print(summary(messages))
        k = max(1, args.clients)
        mboxes = [tmp / f"corpus-{i}.mbox" for i in range(k)]
        for i, path in enumerate(mboxes):
            write_mbox(messages[i::k], path)
        one = tmp / "one.mbox"
        write_mbox(messages[:1], one)
        fixed, _, _ = timed_ingest(demo_config(tmp / "startup"), [one])
        wall, cpu, codes = timed_ingest(demo_config(tmp / "mailgate"), mboxes)
        rows = count_rows(db_path(tmp / "mailgate"))
        warning = not_accepted(rows, db_path(tmp / "mailgate"))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    n = args.messages
    print(f"\nmailgate ingest: {n} messages, {k} process(es), exit codes {sorted(set(codes))}")
    print(f"wall {wall:.2f} s -> {n / wall:.0f} msg/s; CPU {cpu * 1e3 / n:.2f} ms/msg")
    net = n / max(1e-9, wall - fixed)
    print(f"one process on a 1-message mbox: {fixed:.2f} s; without that fixed cost {net:.0f} msg/s")
    print(f"database: {rows}")
    if warning:
        print(warning)
    ok = rows["inbound"] == n and set(codes) == {0}
    print(f"check: {rows['inbound']} inbound rows for {n} messages -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
