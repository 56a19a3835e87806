"""``mailgate serve`` under systemd ``Type=notify`` (sd_notify protocol, checked with a stand-in socket).

Promises: READY=1 is sent only once the SMTP listener is bound (a client may
connect the moment systemd says "started"); SIGHUP (``ExecReload``) is framed
by RELOADING=1 (with MONOTONIC_USEC) and READY=1; SIGTERM sends STOPPING=1
and the process exits 0; every message comes from the main PID, because
``NotifyAccess=main`` ignores any other sender.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from mailgate.config import load_config
from tests.conftest import PATIENCE, REPO, make_mail, smtp_deliver
from tests.support.notify_socket import NotifySocket


def test_ready_reloading_and_stopping_come_from_the_main_process(config_path: Path, tmp_path: Path) -> None:
    smtp = load_config(config_path).main.intake.smtp
    assert smtp is not None
    with NotifySocket() as ns, (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config_path)],
                                env={**os.environ, **ns.env}, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            ready = ns.wait_for("READY", timeout=PATIENCE)
            assert ready.pid == proc.pid
            with socket.create_connection((smtp.host, smtp.port), timeout=10) as sock:  # bound before READY
                assert sock.recv(3) == b"220"
            code, text = smtp_deliver(smtp.host, smtp.port, make_mail(message_id="<notify@customer.example>"))
            assert code == 250, text

            proc.send_signal(signal.SIGHUP)
            reloading = ns.wait_for("RELOADING", timeout=PATIENCE)
            assert reloading.pid == proc.pid
            assert int(reloading.get("MONOTONIC_USEC") or 0) > 0
            assert ns.wait_for("READY", timeout=PATIENCE).pid == proc.pid

            proc.send_signal(signal.SIGTERM)
            stopping = ns.wait_for("STOPPING", timeout=PATIENCE)
            assert stopping.pid == proc.pid
            assert proc.wait(PATIENCE) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(PATIENCE)
    assert all(n.pid == proc.pid for n in ns.history)


def test_abstract_notify_socket_is_supported(config_path: Path, tmp_path: Path) -> None:
    with NotifySocket(abstract=True) as ns, (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config_path)],
                                env={**os.environ, **ns.env}, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            assert ns.wait_for("READY", timeout=PATIENCE).pid == proc.pid
            proc.send_signal(signal.SIGTERM)
            ns.wait_for("STOPPING", timeout=PATIENCE)
            assert proc.wait(PATIENCE) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(PATIENCE)


def test_watchdog_keepalives_while_serving(config_path: Path, tmp_path: Path) -> None:
    """``WatchdogSec=`` in the unit: systemd kills a daemon that stops pinging, so serve must ping."""
    with NotifySocket() as ns, (tmp_path / "serve.log").open("wb") as log:
        env = {**os.environ, **ns.env, "WATCHDOG_USEC": "500000"}
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config_path)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            ns.wait_for("READY", timeout=PATIENCE)
            pings = [ns.wait_for("WATCHDOG", timeout=10) for _ in range(3)]
            assert all(p.pid == proc.pid for p in pings)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(PATIENCE) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(PATIENCE)
