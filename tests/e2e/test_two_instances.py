"""Two mailgate instances pointed at each other's support address exchange a bounded number of mails.

A mail to desk A claims to come from desk B's support address, the classic start of a help-desk
ping-pong. A acknowledges it to B over real SMTP; B sees an automatic mail and stays silent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO, free_port, run_cli, start_service


def _desk(root: Path, name: str, port: int, peer_port: int) -> Path:
    folder = root / name
    folder.mkdir()
    config = {
        "state_dir": str(folder / "state"),
        "database": {"url": f"sqlite:///{folder / 'state' / 'mailgate.db'}"},
        "intake": {"addresses": [f"support@{name}.example"], "smtp": {"listen": f"127.0.0.1:{port}"}},
        "outbound": {"from": f"Desk {name} <support@{name}.example>", "transport": "smtp",
                     "smtp": {"host": "127.0.0.1", "port": peer_port}, "retry": {"first": "1s", "maximum": "2s"}},
        "scheduler": {"outbox_interval": "1s"},
        "templates": str(REPO / "templates"),
    }
    (folder / "mailgate.yaml").write_text(yaml.safe_dump(config))
    return folder / "mailgate.yaml"


def _inbound(config: Path) -> int:
    rows = json.loads(run_cli(config, "tickets", "list", "--json").stdout)
    quarantined = json.loads(run_cli(config, "quarantine", "list", "--json").stdout)
    return len(rows) + len(quarantined)


def test_desks_pointed_at_each_other_do_not_loop(tmp_path: Path) -> None:
    port_a, port_b = free_port(), free_port()
    config_a, config_b = _desk(tmp_path, "a", port_a, port_b), _desk(tmp_path, "b", port_b, port_a)
    desk_a = start_service(config_a, tmp_path / "a.log")
    desk_b = start_service(config_b, tmp_path / "b.log")
    try:
        raw = b"From: support@b.example\r\nTo: support@a.example\r\nSubject: Hello desk\r\n\r\nhi\r\n"
        with desk_a.smtp() as client:
            client.sendmail("support@b.example", ["support@a.example"], raw)
        deadline = time.monotonic() + 20
        while _inbound(config_b) < 1:  # A's acknowledgment reached B
            assert time.monotonic() < deadline, desk_b.output()
            time.sleep(0.2)
        counts: list[Any] = []
        for _ in range(3):  # several outbox ticks on both sides: nothing more may flow
            time.sleep(1.5)
            counts.append((_inbound(config_a), _inbound(config_b)))
        assert counts == [(1, 1)] * 3
        sent_by_b = json.loads(run_cli(config_b, "outbox", "list", "--json").stdout)
        assert [r for r in sent_by_b if r["to"] == ["support@a.example"]] == []  # B never answered A
    finally:
        desk_a.stop()
        desk_b.stop()
