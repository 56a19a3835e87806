"""serve's child processes: the pipeline and the outbox sender die, serve carries on, nothing is lost."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from tests.conftest import (
    PATIENCE,
    MakeConfig,
    Service,
    make_mail,
    smtp_deliver,
    sql_rows,
    start_service,
    wait_for_outgoing,
    wait_until,
)


def _children(service: Service) -> tuple[int, int]:
    found = wait_until(
        lambda: re.search(r"pipeline in process (\d+), outbox sender in process (\d+)", service.output()),
        timeout=PATIENCE, what="the child processes' log line", log=service.output,
    )
    return int(found.group(1)), int(found.group(2))


def _deliver_until_accepted(service: Service, raw: bytes, timeout: float = PATIENCE) -> list[int]:
    """Send like an MTA does: retry on 4xx until a 250; return every code seen."""
    codes: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, _ = smtp_deliver(service.host, service.port, raw)
        codes.append(code)
        if code == 250:
            return codes
        assert 400 <= code < 500, f"a dead pipeline must mean 'try again later', got {code}"
        time.sleep(0.5)
    raise AssertionError(f"no 250 within {timeout} s: {codes}")


def test_killed_pipeline_process_is_restarted_and_mail_keeps_flowing(service: Service) -> None:
    pipeline, _ = _children(service)
    assert _deliver_until_accepted(service, make_mail("Before", message_id="<before@customer.example>")) == [250]

    os.kill(pipeline, signal.SIGKILL)
    codes = _deliver_until_accepted(service, make_mail("After", message_id="<after@customer.example>"))

    assert service.proc.poll() is None, "serve itself must survive its pipeline process"
    wait_until(lambda: "the ingest process died" in service.output(), timeout=PATIENCE, what="the death logged",
               log=service.output)
    assert codes[-1] == 250
    rows = sql_rows(service.config, "SELECT message_id, status, ticket_id FROM inbound ORDER BY id")
    stored = [(mid, status) for mid, status, _ in rows]
    assert stored == [("<before@customer.example>", "accepted"), ("<after@customer.example>", "accepted")]
    assert all(ticket is not None for *_, ticket in rows)
    new_pipeline, _ = _children_after_restart(service, pipeline)
    assert new_pipeline != pipeline


def _children_after_restart(service: Service, old: int) -> tuple[int, int | None]:
    """The restarted pipeline process: the child of serve that is neither the old one nor the sender."""
    _, sender = _children(service)
    kids = Path(f"/proc/{service.proc.pid}/task/{service.proc.pid}/children").read_text().split()
    pids = [int(k) for k in kids if int(k) not in (old, sender)]
    spawned = [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(spawned) == 1, f"expected one new pipeline process among {pids}"
    return spawned[0], sender


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie its parent has not reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_killed_sender_process_is_restarted_and_the_acknowledgment_goes_out(service: Service) -> None:
    _, sender = _children(service)
    os.kill(sender, signal.SIGKILL)
    wait_until(lambda: _gone(sender), timeout=10, what="the sender gone")

    assert smtp_deliver(service.host, service.port, make_mail("Need help", message_id="<ack@customer.example>"))[0] \
        == 250

    [ack] = wait_for_outgoing(service.config, 1, service)
    assert ack["Auto-Submitted"] == "auto-replied"
    assert "the outbox sender process died" in service.output()


def test_one_process_mode_takes_mail_and_acknowledges_it(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(processes=False)
    service = start_service(config, tmp_path / "serve.log")
    try:
        raw = make_mail("Single", message_id="<single@customer.example>")
        assert smtp_deliver(service.host, service.port, raw)[0] == 250
        [ack] = wait_for_outgoing(config, 1, service)
        assert ack["In-Reply-To"] == "<single@customer.example>"
        assert "pipeline in process" not in service.output()
    finally:
        assert service.stop() == 0


def test_the_sender_runs_at_a_lower_priority_than_intake(service: Service) -> None:
    pipeline, sender = _children(service)

    def niceness(pid: int) -> int:  # field 19 of /proc/PID/stat, after the command in parentheses
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])

    wait_until(lambda: niceness(sender) == 19, what="the sender at nice 19", log=service.output)
    assert niceness(service.proc.pid) == niceness(pipeline) == 0
    assert "priority not lowered" not in service.output()
