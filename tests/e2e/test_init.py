"""``mailgate init``: a starter configuration that works where the unit's comments put it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port, make_mail, run_cli, start_service, wait_until

LINT = REPO / "tests" / "support" / "lint_units.sh"



def init(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgate", "init", *args], capture_output=True, text=True,
                          timeout=120, cwd="/")


def test_init_writes_a_configuration_that_checks_and_serves_from_anywhere(tmp_path: Path) -> None:
    etc, state = tmp_path / "etc" / "mailgate", tmp_path / "var" / "lib" / "mailgate"
    port = free_port()
    made = init(str(etc), "--state-dir", str(state), "--address", "help@acme.example", "--listen", f"127.0.0.1:{port}")
    assert made.returncode == 0, made.stderr
    assert (state / "secret").stat().st_mode & 0o077 == 0  # generated, private
    main = yaml.safe_load((etc / "mailgate.yaml").read_text())
    assert main["state_dir"] == str(state) and "templates" not in main  # packaged templates
    assert main["intake"]["addresses"] == ["help@acme.example"]
    checked = run_cli(etc / "mailgate.yaml", "check-config")
    assert checked.code == 0, checked.stderr

    moved = tmp_path / "elsewhere"  # nothing in it depends on the checkout or on the current folder
    shutil.copytree(etc, moved)
    service = start_service(moved / "mailgate.yaml", tmp_path / "serve.log")
    try:
        with service.smtp() as client:
            client.sendmail("pat@customer.example", ["help@acme.example"], make_mail(to="help@acme.example"))
        wait_until(lambda: list((state / "outgoing" / "new").glob("*")), what="the ack", log=service.output)
    finally:
        service.stop()

    again = init(str(etc), "--state-dir", str(state))
    assert again.returncode == 1 and "--force" in again.stderr  # an admin's edits are never overwritten
    assert yaml.safe_load((etc / "mailgate.yaml").read_text())["intake"]["addresses"] == ["help@acme.example"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_unit_verifies_with_the_initialised_configuration(tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "mailgate"
    assert init(str(etc), "--state-dir", str(tmp_path / "state")).returncode == 0
    unit = (REPO / "systemd" / "mailgate.service").read_text().replace("/etc/mailgate/", f"{etc}/")
    (tmp_path / "mailgate.service").write_text(unit)
    proc = subprocess.run(["bash", str(LINT), "--threshold", "20", str(tmp_path / "mailgate.service")],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stdout + proc.stderr
