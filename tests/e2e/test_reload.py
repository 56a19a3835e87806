"""Signals an admin sends to a running ``mailgate serve``: SIGHUP reloads, SIGTERM drains and stops.

Promises: after SIGHUP a good rules change takes effect for the next mail;
a broken rules file is refused, the old rules stay in force and the error is
logged as ``file:line: message``; mail keeps being accepted (250) throughout.
SIGTERM, sent while clients are streaming, finishes what was accepted and
exits 0; every mail that got a 250 is stored, and the rest got a temporary
refusal the sender will retry.
"""

from __future__ import annotations

import signal
import smtplib
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from mailgate.config import load_config
from tests.conftest import (
    PATIENCE,
    REPO,
    MakeConfig,
    Service,
    make_mail,
    smtp_deliver,
    sql_rows,
    start_service,
    wait_until,
)


def rules_with(*extra: dict[str, Any]) -> dict[str, Any]:
    rules = yaml.safe_load((REPO / "config" / "rules.yaml").read_text())
    rules["rules"] = [*(rules.get("rules") or []), *extra]
    return dict(rules)


def rule(name: str, word: str, priority: str, op: str = "contains") -> dict[str, Any]:
    return {"name": name, "when": {"any": [{"field": "subject", "op": op, "value": word}]},
            "then": {"priority": priority}}


class Stream:
    """A client sending mail back to back in a thread; records every final reply code."""

    def __init__(self, svc: Service, prefix: str) -> None:
        self.svc, self.prefix = svc, prefix
        self.codes: list[int] = []
        self.acked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        try:
            with smtplib.SMTP(self.svc.host, self.svc.port, timeout=PATIENCE) as client:
                client.ehlo("client.example")
                while not self._stop.is_set():
                    n += 1
                    mid = f"<{self.prefix}-{n}@customer.example>"
                    client.mail("pat@customer.example")
                    client.rcpt("support@example.com")
                    code, _ = client.data(make_mail(f"stream {n}", message_id=mid))
                    self.codes.append(code)
                    if code == 250:
                        self.acked.append(mid)
        except (smtplib.SMTPException, OSError):
            self.codes.append(-1)  # connection ended (expected only on SIGTERM)

    def __enter__(self) -> Stream:
        self._thread.start()
        wait_until(lambda: len(self.codes) >= 5, what="the stream to get going", log=self.svc.output)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(PATIENCE)


def send(svc: Service, subject: str, db_url: str) -> str:
    """Send a new mail; return the priority its ticket got (read from the database: the CLI needs valid rules)."""
    code, text = smtp_deliver(svc.host, svc.port, make_mail(subject, message_id=f"<{subject.replace(' ', '-')}@c>"))
    assert code == 250, text
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT priority FROM ticket WHERE subject = :s")
            return str(conn.execute(query, {"s": subject}).scalar_one())
    finally:
        engine.dispose()


def hup(svc: Service, marker: str) -> None:
    seen = svc.output().count(marker)
    svc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: svc.output().count(marker) > seen, what=f"log line {marker!r}", log=svc.output)


def test_sighup_applies_a_good_rules_change_and_refuses_a_broken_one(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(rules=rules_with(rule("printer-high", "Printer", "high")))
    rules_file = config.parent / "rules.yaml"
    url = load_config(config).database_url
    svc = start_service(config, tmp_path / "serve.log")
    try:
        with Stream(svc, "during-reload") as stream:
            assert send(svc, "Toner empty", url) == "normal"
            rules_file.write_text(yaml.safe_dump(
                rules_with(rule("printer-high", "Printer", "high"), rule("toner-low", "Toner", "low")),
                sort_keys=False))
            hup(svc, "msg=\"reload applied\"")
            assert send(svc, "Toner empty again", url) == "low"  # the new rule applies to the next mail

            broken = rules_with(rule("printer-high", "Printer", "high"), rule("oops", "Toner", "normal", "containz"))
            rules_file.write_text(yaml.safe_dump(broken, sort_keys=False))
            hup(svc, "msg=\"reload refused\"")
            line = next(i for i, text in enumerate(rules_file.read_text().splitlines(), 1) if "containz" in text)
            assert f"{rules_file}:{line}:" in svc.output()
            assert send(svc, "Toner empty a third time", url) == "low"  # old rules stay in force
            assert send(svc, "Printer jam", url) == "high"
        assert stream.codes and set(stream.codes) == {250}, stream.codes  # intake never paused
    finally:
        assert svc.stop() == 0


def test_sigterm_drains_and_exits_0_with_every_acknowledged_mail_stored(service: Service) -> None:
    streams = [Stream(service, f"drain{i}") for i in range(3)]
    for stream in streams:
        stream.__enter__()
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(PATIENCE) == 0
    for stream in streams:
        stream.__exit__(None, None, None)
    acked = {mid for s in streams for mid in s.acked}
    stored = {mid for (mid,) in sql_rows(service.config, "SELECT message_id FROM inbound")}
    assert acked and acked <= stored
    for stream in streams:
        assert set(stream.codes) <= {250, 421, 451, -1}, stream.codes  # refusals after SIGTERM are temporary
    assert "stopping" in service.output()
