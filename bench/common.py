"""Helpers shared by the benchmarks: a private copy of the demo config, ports, process hygiene, row counts."""

from __future__ import annotations

import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def machine() -> str:
    """One line: cores, Python, SQLite, load average (figures from a busy machine are noisy)."""
    import os
    import platform
    from importlib.metadata import version

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"aiosmtpd {version('aiosmtpd')}, SQLAlchemy {version('SQLAlchemy')}, load average {load}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(folder: Path, port: int | None = None) -> Path:
    """Copy config/*.yaml into ``folder/config`` and point every piece of state into ``folder``.

    The repository's ./var is never touched: state_dir, the SQLite file and the
    outgoing Maildir live under ``folder``; the SMTP listener moves to ``port``
    (a free loopback port by default). Everything else is the demo as shipped.
    """
    cfg_dir = folder / "config"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    for path in (REPO / "config").glob("*.yaml"):
        shutil.copy(path, cfg_dir / path.name)
    main_path = cfg_dir / "mailgate.yaml"
    main: dict[str, Any] = yaml.safe_load(main_path.read_text())
    state = folder / "state"
    main["state_dir"] = str(state)
    main["database"] = {**(main.get("database") or {}), "url": f"sqlite:///{state / 'mailgate.db'}"}
    main["outbound"] = {**main["outbound"], "maildir": str(folder / "outgoing")}
    main["templates"] = str(REPO / "templates")
    smtp = main["intake"].get("smtp") or {}
    main["intake"]["smtp"] = {**smtp, "listen": f"127.0.0.1:{port or free_port()}"}
    main_path.write_text(yaml.safe_dump(main, sort_keys=False))
    return main_path


def db_path(folder: Path) -> Path:
    return folder / "state" / "mailgate.db"


def wait_for_smtp(port: int, proc: Any = None, timeout: float = 60) -> None:
    """Until something on 127.0.0.1:port greets with 220 (``proc`` may be a Popen or a multiprocessing.Process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = proc is None or (proc.poll() is None if hasattr(proc, "poll") else proc.is_alive())
        if not alive:
            raise RuntimeError(f"server for port {port} exited before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(3) == b"220":
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered on 127.0.0.1:{port}")


def stop_popen(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM (mailgate drains and exits 0), then SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def not_accepted(rows: dict[str, Any], path: Path) -> str | None:
    """A warning when some inbound rows are not 'accepted' (the corpus should be): the tree may be mid-edit."""
    bad = {k: v for k, v in rows["inbound_by_status"].items() if k != "accepted"}
    if not bad:
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        reasons = conn.execute(
            "SELECT reason, count(*) FROM inbound WHERE status != 'accepted' GROUP BY reason ORDER BY 2 DESC LIMIT 3"
        ).fetchall()
    finally:
        conn.close()
    return f"WARNING: not accepted {bad}; the figures are NOT representative. Reasons: {reasons}"


def count_rows(path: Path) -> dict[str, Any]:
    """Row counts of mailgate's SQLite file, read directly (not through mailgate)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:

        def one(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])

        return {
            "inbound": one("SELECT count(*) FROM inbound"),
            "inbound_by_status": dict(conn.execute("SELECT status, count(*) FROM inbound GROUP BY status").fetchall()),
            "tickets": one("SELECT count(*) FROM ticket"),
            "messages": one("SELECT count(*) FROM message"),
            "outbox": one("SELECT count(*) FROM outbox"),
            "outbox_by_status": dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()),
        }
    finally:
        conn.close()


def rss_kib(pid: int, field: str) -> int:
    """A process's VmRSS or VmHWM (peak) in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def process_family(pid: int) -> list[int]:
    """serve and its child processes (pipeline, outbox sender, multiprocessing's resource tracker)."""
    children = {int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()}
    return [pid, *sorted(children)]
