"""A help topic's own acknowledgment (``ack_template``) is the one its customers get, by mail and by
``tickets open``, and a rule's canned ``reply`` takes its place; other mail keeps ``ack_new``.
``check-config`` names a template that is missing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, MakeConfig, Service, run_cli, smtp_deliver, start_service
from tests.support.outgoing import text_of, wait_mail

RULES = {
    "help_topics": [
        {"name": "General", "department": "Support"},
        {"name": "Billing", "department": "Support", "recognise": {"addresses": ["billing@example.com"]},
         "ack_template": "ack_billing"},
    ],
    "default_help_topic": "General",
    "rules": [{"name": "refunds", "when": {"all": [{"field": "subject", "op": "contains", "value": "voucher"}]},
               "then": {"reply": "ack_billing"}}],
}
AGENTS = {"agents": [{"name": "Jane Doe", "email": "jane@example.com"}],
          "departments": [{"name": "Support", "members": ["jane@example.com"]}]}


def templates_with_billing(folder: Path) -> Path:
    shutil.copytree(REPO / "templates", folder)
    (folder / "ack_billing.subject.j2").write_text("{{ ticket.tag }} Billing got your note: {{ ticket.subject }}\n")
    (folder / "ack_billing.txt.j2").write_text("The billing team answers within two days.\n")
    return folder


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Any:
    config = make_config(rules=RULES, agents=AGENTS, templates=str(templates_with_billing(tmp_path / "tpl")),
                         intake={"addresses": ["support@example.com", "billing@example.com"]})
    svc = start_service(config, tmp_path / "serve.log")
    yield svc
    svc.stop()


def mail(svc: Service, sender: str, to: str, subject: str) -> None:
    raw = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@c.example>"
           "\r\n\r\nHello.\r\n").encode()
    code, answer = smtp_deliver(svc.host, svc.port, raw, mail_from=sender, rcpts=(to,))
    assert code == 250, answer


def test_the_topics_acknowledgment_is_sent(desk: Service) -> None:
    mail(desk, "pat@customer.example", "billing@example.com", "Invoice twice")
    mail(desk, "sam@customer.example", "support@example.com", "Printer jam")
    [billing] = wait_mail(desk, "pat@customer.example")
    assert "Billing got your note: Invoice twice" in billing["Subject"]
    assert "billing team answers within two days" in text_of(billing)
    [general] = wait_mail(desk, "sam@customer.example")
    assert "We received your request: Printer jam" in general["Subject"]
    mail(desk, "lou@customer.example", "support@example.com", "My voucher")  # a rule's canned reply
    [canned] = wait_mail(desk, "lou@customer.example")
    assert "Billing got your note: My voucher" in canned["Subject"]
    done = run_cli(desk.config, "tickets", "open", "--requester", "ken@customer.example", "--subject", "Refund",
                   "--agent", "jane@example.com", "--topic", "Billing", stdin=b"Ken wants a refund.")
    assert done.code == 0, done.stderr
    [entered] = wait_mail(desk, "ken@customer.example")
    assert "Billing got your note: Refund" in entered["Subject"]


def test_check_config_names_a_missing_ack_template(make_config: MakeConfig, tmp_path: Path) -> None:
    folder = templates_with_billing(tmp_path / "tpl")
    (folder / "ack_billing.txt.j2").unlink()
    config = make_config(rules=RULES, agents=AGENTS, templates=str(folder))
    done = run_cli(config, "check-config")
    assert done.code == 1
    assert "unknown template 'ack_billing'" in done.stderr and "ack_billing.txt.j2" in done.stderr, done.stderr


def test_a_reply_template_without_a_subject_takes_the_acknowledgments(desk: Service, tmp_path: Path) -> None:
    (tmp_path / "tpl" / "ack_billing.subject.j2").unlink()  # the daemon renders from this folder, per mail
    mail(desk, "pat@customer.example", "billing@example.com", "Invoice lost")
    [ack] = wait_mail(desk, "pat@customer.example")
    assert "We received your request: Invoice lost" in ack["Subject"]
    assert "billing team answers within two days" in text_of(ack)
