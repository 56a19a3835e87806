"""The shipped unit file is valid for systemd 252+ and hardened (exposure score at most 2.0)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = REPO / "tests" / "support" / "lint_units.sh"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies_and_is_hardened() -> None:
    proc = subprocess.run(["bash", str(LINT), "--threshold", "20", str(REPO / "systemd" / "mailgate.service")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   verify mailgate.service" in proc.stdout and "ok   security" in proc.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_lint_catches_a_typo(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported, not silently accepted."""
    broken = tmp_path / "mailgate.service"
    broken.write_text((REPO / "systemd" / "mailgate.service").read_text().replace("ProtectSystem=", "ProtectSytem="))
    proc = subprocess.run(["bash", str(LINT), str(broken)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0


def test_unit_uses_notify_and_reload_by_signal() -> None:
    text = (REPO / "systemd" / "mailgate.service").read_text()
    assert "Type=notify\n" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text


def test_unit_runs_as_the_documented_user_and_lets_the_sender_lower_its_priority() -> None:
    lines = (REPO / "systemd" / "mailgate.service").read_text().splitlines()
    assert "User=mailgate" in lines and "StateDirectory=mailgate" in lines and "DynamicUser=yes" not in lines
    filters = [line for line in lines if line.startswith("SystemCallFilter=")]
    # an allow list, then the denials, then setpriority allowed again: the later entry wins
    assert filters[0] == "SystemCallFilter=@system-service"
    assert filters.index("SystemCallFilter=setpriority") > filters.index("SystemCallFilter=~@privileged @resources")
