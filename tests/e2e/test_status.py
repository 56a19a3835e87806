"""``mailgate status`` on a running daemon and after it stopped, on screen and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import MakeConfig, free_port, run_cli, start_service, wait_until


def test_status_shows_the_daemon_its_mailbox_and_the_queues(make_config: MakeConfig, tmp_path: Path) -> None:
    closed = free_port()  # no IMAP server there: the mailbox is still leased (and failing, which is the watchdog's)
    config = make_config(cluster={"name": "desk1", "lease_time": "3s"},
                         intake={"imap": [{"name": "support", "host": "127.0.0.1", "port": closed,
                                           "security": "plain", "username": "u", "password": "p"}]})
    service = start_service(config, tmp_path / "serve.log")
    try:
        data = wait_until(lambda: (got := json.loads(run_cli(config, "status", "--json").stdout))["alive"] == 1
                          and got["mailboxes"][0]["holder"] and got, what="the daemon holding its mailbox",
                          log=service.output)
        [daemon] = data["daemons"]
        assert daemon["name"] == "desk1" and daemon["alive"] and daemon["holds"] == ["support"]
        assert daemon["pid"] == service.proc.pid
        [mailbox] = data["mailboxes"]
        assert mailbox["holder"] == "desk1" and mailbox["configured"] and 0 < mailbox["expires_in"] <= 3
        assert data["outbox"] == {"pending": 0, "oldest_pending_age": None}
        assert data["sla"] == {"overdue_rungs": 0, "sweep_lag": None}
        screen = run_cli(config, "status")
        assert screen.code == 0
        assert "daemons: 1 alive" in screen.stdout and "desk1" in screen.stdout
        assert "held by desk1" in screen.stdout and "outbox: 0 pending" in screen.stdout
    finally:
        assert service.stop() == 0
    after = json.loads(run_cli(config, "status", "--json").stdout)
    assert after["alive"] == 0 and after["daemons"][0]["stopped_ago"] is not None
    assert after["mailboxes"][0]["holder"] is None  # given back on a clean stop, at once
    assert "NOT HELD (last desk1)" in run_cli(config, "status").stdout
