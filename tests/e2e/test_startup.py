"""Start-up failures an admin meets first: one clear line, a non-zero exit, nothing left running.

Each case runs the real ``mailgate serve`` with its default three processes and checks the exit code,
that the reason is a single ``start failed`` log line (no traceback), and that no process of it remains.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PATIENCE, REPO, MakeConfig, run_cli


def serve_until_exit(config: Path) -> subprocess.CompletedProcess[str]:
    """serve with a mark in its environment, which the processes it spawns inherit (see ``left_running``)."""
    env = {**os.environ, "MAILGATE_TEST_MARK": str(config)}
    return subprocess.run([sys.executable, "-m", "mailgate", "serve", "-c", str(config)], capture_output=True,
                          text=True, timeout=PATIENCE, cwd=REPO, env=env)


def left_running(config: Path) -> list[str]:
    """Processes that carry this serve's mark: itself or any child it spawned and left behind."""
    mark = f"MAILGATE_TEST_MARK={config}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def assert_one_clear_line(result: subprocess.CompletedProcess[str], reason: str) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    failed = [line for line in output.splitlines() if 'msg="start failed"' in line]
    assert len(failed) == 1 and reason in failed[0], output


def test_port_in_use_exits_1_with_one_line(make_config: MakeConfig) -> None:
    config = make_config()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = make_config(intake={"smtp": {"listen": f"127.0.0.1:{port}"}})
        result = serve_until_exit(config)
    assert result.returncode == 1
    assert_one_clear_line(result, f"cannot listen on 127.0.0.1:{port}")
    assert left_running(config) == []


def test_state_dir_that_cannot_be_made_exits_non_zero_with_one_line(make_config: MakeConfig, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = make_config(database={"url": f"sqlite:///{blocker / 'state' / 'mailgate.db'}"})
    result = serve_until_exit(config)
    assert result.returncode != 0
    assert_one_clear_line(result, "database folder")
    assert left_running(config) == []


@pytest.mark.skipif(not os.environ.get("MAILGATE_TEST_DATABASE_URL", "").startswith("postgresql"),
                    reason="a database name the server does not know needs PostgreSQL")
def test_wrong_database_name_is_a_configuration_error(make_config: MakeConfig) -> None:
    base = os.environ["MAILGATE_TEST_DATABASE_URL"].rsplit("/", 1)[0]
    config = make_config(database={"url": f"{base}/no_such_database_here"})
    result = serve_until_exit(config)
    assert result.returncode == 1
    assert_one_clear_line(result, 'database \\"no_such_database_here\\" does not exist')
    checked = run_cli(config, "check-config")
    assert checked.code == 1 and 'database "no_such_database_here" does not exist' in checked.stderr
    piped = run_cli(config, "ingest", stdin=b"From: a@b.example\r\nSubject: x\r\n\r\nhi\r\n")
    assert piped.code == 75, "an MTA must keep the mail queued until the configuration is fixed"


def test_check_config_says_the_database_answers(make_config: MakeConfig) -> None:
    result = run_cli(make_config(), "check-config")
    assert result.code == 0 and "answers" in result.stdout, result.stderr


def test_database_that_cannot_be_reached_exits_75_with_one_line(make_config: MakeConfig) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:  # a port nothing will answer on once closed
        port = closed.getsockname()[1]
    config = make_config(database={"url": f"postgresql+psycopg://postgres@127.0.0.1:{port}/mailgate"})
    result = serve_until_exit(config)
    assert result.returncode == 75  # temporary: a service manager's restart may find it back
    assert_one_clear_line(result, "database unavailable")
    assert left_running(config) == []
