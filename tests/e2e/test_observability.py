"""An admin's questions answered from outside: the journal has a line per mail, ``explain`` says why.

Real daemon, real SMTP, real CLI. Each mail here takes a different way (new, duplicate, refused by a
rule, a bounce that proves nothing, a reply threaded by its tag), and each must show up once in the
log with the right outcome and be explained from the record kept when it arrived.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import (
    REPO,
    MakeConfig,
    Service,
    SmtpSink,
    cli_json,
    make_mail,
    run_cli,
    smtp_deliver,
    start_service,
    wait_until,
)
from tests.resilience.test_crash_points import TINY_RULES, TINY_SLA  # a plan whose rungs come due in seconds


def logfmt(line: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(line) if "=" in token)


def received_lines(service: Service) -> list[dict[str, str]]:
    return [logfmt(line) for line in service.output().splitlines() if 'msg="mail received"' in line]


def with_reject_rule() -> dict[str, Any]:
    rules = yaml.safe_load((REPO / "config" / "rules.yaml").read_text())
    rules["rules"].append(
        {"name": "no-lottery", "when": {"all": [{"field": "subject", "op": "contains", "value": "lottery"}]},
         "then": {"reject": "We do not take part in lotteries."}}
    )
    return rules


def test_each_mail_is_one_log_line_and_can_be_explained(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(rules=with_reject_rule())
    service = start_service(config, tmp_path / "serve.log")
    try:
        first = make_mail("Printer urgent", message_id="<obs-1@customer.example>")
        assert smtp_deliver(service.host, service.port, first)[0] == 250
        assert smtp_deliver(service.host, service.port, first)[0] == 250  # the same mail again
        lottery = make_mail("You won the lottery", message_id="<obs-2@customer.example>")
        assert smtp_deliver(service.host, service.port, lottery)[0] == 550
        wait_until(lambda: len(received_lines(service)) >= 3, what="three log lines", log=service.output)
        number = received_lines(service)[0]["ticket"]
        bounce = make_mail(f"Re: [#{number}] Printer urgent", sender="MAILER-DAEMON <mailer-daemon@relay.example>",
                           message_id="<obs-3@relay.example>",
                           headers={"X-Failed-Recipients": "jane@example.com, victim@elsewhere.example"})
        assert smtp_deliver(service.host, service.port, bounce, mail_from="")[0] == 250
        reply = make_mail(f"Re: [#{number}] Printer urgent", message_id="<obs-4@customer.example>",
                          body="Still burning.")
        assert smtp_deliver(service.host, service.port, reply)[0] == 250
        lines = wait_until(lambda: (got := received_lines(service)) and len(got) >= 5 and got,
                           what="five log lines", log=service.output)
        # the ack and the agents' alert for the new ticket go out; explain then shows them as sent
        wait_until(lambda: all(n["status"] == "sent" for n in cli_json(config, "explain", "id:1")["notifications"]),
                   what="notifications sent", log=service.output)
    finally:
        service.stop()

    assert len(lines) == 5, service.output()
    new, dup, refused, bounced, answered = lines
    assert new["outcome"] == "accepted" and new["thread"] == "new" and new["topic"] == "General"
    assert new["message_id"] == "<obs-1@customer.example>" and new["mail_from"] == "pat@customer.example"
    assert new["source"] == "smtp" and new["peer"].startswith("127.0.0.1") and float(new["ms"]) > 0
    assert new["level"] == "info" and new["ts"].endswith("Z")
    assert dup["outcome"] == "duplicate" and dup["ticket"] == number
    assert refused["outcome"] == "rejected" and "lotteries" in refused["reason"]
    assert bounced["outcome"] == "quarantined" and "does not prove" in bounced["reason"]
    assert answered["outcome"] == "accepted" and answered["thread"] == "tag" and answered["ticket"] == number
    assert [int(line["id"]) for line in lines] == [1, 2, 3, 4, 5]

    record = cli_json(config, "explain", "id:1")
    assert record["dedupe"] == "first copy" and record["classification"]["kind"] == "new"
    assert record["thread"]["via"] == "none" and "no ticket tag in the subject" in record["thread"]["why_not"]
    assert record["sender"]["role"] == "requester"
    assert "urgent-words" in record["rules"]["matched"]  # (after-hours too, by the clock)
    now = {t["rule"]: t for t in record["rules"]["trace_now"]}  # every rule's verdict, which condition failed
    assert now["urgent-words"]["matched"] and not now["vip-domain"]["matched"]
    assert "sender_domain" in now["vip-domain"]["reason"]
    assert record["actions"]["created"] is True and record["ticket"] == number
    kinds = {(n["kind"], n["status"]) for n in record["notifications"]}
    assert ("ack_new", "sent") in kinds and ("alert_new", "sent") in kinds

    text = run_cli(config, "explain", "<obs-2@customer.example>")
    assert text.code == 0, text.stderr
    assert "rejected (We do not take part in lotteries.)" in text.stdout
    matched = next(line for line in text.stdout.splitlines() if line.strip().startswith("rules matched:"))
    assert "no-lottery" in matched  # a refused mail's bytes are not kept: what matched is all there is

    by_ticket = cli_json(config, "explain", number)
    assert [r["id"] for r in by_ticket] == [1, 2, 5]
    assert by_ticket[1]["dedupe"] == "same content as inbound #1"
    assert by_ticket[2]["thread"] == {"via": "tag", "ticket": number, "signed": False}
    assert by_ticket[2]["actions"]["created"] is False

    bounce_record = cli_json(config, "explain", "id:4")
    assert bounce_record["classification"]["kind"] == "bounce" and "notifications" not in bounce_record

    shown = run_cli(config, "tickets", "show", number)
    assert shown.code == 0 and "assignee none" in shown.stdout and "None" not in shown.stdout, shown.stdout

    missing = run_cli(config, "explain", "<nobody@nowhere.example>")
    assert missing.code == 1 and "no received mail has Message-ID" in missing.stderr


def test_json_log_and_no_timestamp_under_the_journal(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(logging={"format": "json", "level": "info"})
    service = start_service(config, tmp_path / "serve.log", env={"JOURNAL_STREAM": "8:12345"})
    try:
        assert smtp_deliver(service.host, service.port, make_mail(message_id="<json-1@customer.example>"))[0] == 250
        line = wait_until(
            lambda: next((ln for ln in service.output().splitlines() if '"mail received"' in ln), None),
            what="the mail's log line", log=service.output,
        )
    finally:
        service.stop()
    event = json.loads(line)
    assert event["msg"] == "mail received" and event["outcome"] == "accepted"
    assert event["message_id"] == "<json-1@customer.example>" and event["source"] == "smtp"
    assert "ts" not in event  # the journal stamps it
    for other in service.output().splitlines():
        if other.startswith("{"):
            assert "ts" not in json.loads(other)


def delivery_lines(service: Service, msg: str) -> list[dict[str, str]]:
    return [logfmt(line) for line in service.output().splitlines() if f'msg="{msg}"' in line]


def test_each_delivery_attempt_is_one_log_line(make_config: MakeConfig, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    config = make_config(outbound={"transport": "smtp", "smtp": {"host": smtp_sink.host, "port": smtp_sink.port}})
    smtp_sink.answer = "451 4.3.0 try later"
    service = start_service(config, tmp_path / "serve.log")
    try:
        assert smtp_deliver(service.host, service.port, make_mail(message_id="<out-1@customer.example>"))[0] == 250
        retried = wait_until(lambda: [x for x in delivery_lines(service, "mail retried") if x["kind"] == "ack_new"],
                             what="a retried ack", log=service.output)[0]
        assert retried["to"] == "pat@customer.example" and retried["level"] == "warning"
        assert "451" in retried["answer"] and retried["next_attempt"] > retried["ts"][:19]
        smtp_sink.answer = None
        sent = wait_until(lambda: [x for x in delivery_lines(service, "mail sent") if x["kind"] == "ack_new"],
                          what="the ack sent", log=service.output)[0]
        assert sent["outbox"] == retried["outbox"] and int(sent["attempt"]) >= 2
        assert sent["answer"].startswith(f"relayed via {smtp_sink.host}:{smtp_sink.port}: 250")
        smtp_sink.answer = "550 5.1.1 no such user"
        mail = make_mail("Another one", sender="Kim <kim@customer.example>", message_id="<out-2@customer.example>")
        assert smtp_deliver(service.host, service.port, mail, mail_from="kim@customer.example")[0] == 250
        failed = wait_until(
            lambda: [x for x in delivery_lines(service, "mail failed") if x["to"] == "kim@customer.example"],
            what="the refused ack", log=service.output,
        )[0]
        assert "550" in failed["answer"] and "next_attempt" not in failed
    finally:
        service.stop()


def test_each_sla_rung_fired_is_one_log_line(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(sla=TINY_SLA, rules=TINY_RULES, scheduler={"outbox_interval": "1s", "sla_interval": "0.5s"})
    service = start_service(config, tmp_path / "serve.log")
    try:
        assert smtp_deliver(service.host, service.port, make_mail(message_id="<sla-1@customer.example>"))[0] == 250
        rungs = wait_until(lambda: (got := delivery_lines(service, "sla rung fired")) and len(got) >= 4 and got,
                           what="four rungs", log=service.output)
    finally:
        service.stop()
    ticket = received_lines(service)[0]["ticket"]
    fired = sorted((r["target"], int(r["step"])) for r in rungs)
    assert fired == [("first_response", 50), ("first_response", 100), ("resolution", 50), ("resolution", 100)]
    assert all(r["ticket"] == ticket and r["plan"] == "tiny" for r in rungs)
    assert {r["overdue"] for r in rungs if r["step"] == "100"} == {"True"}


def test_a_reload_switches_every_process_to_the_new_log_format(make_config: MakeConfig, tmp_path: Path) -> None:
    import signal

    config = make_config()
    service = start_service(config, tmp_path / "serve.log")
    try:
        main = yaml.safe_load(config.read_text())
        main["logging"] = {"format": "json", "level": "info"}
        config.write_text(yaml.safe_dump(main, sort_keys=False))
        service.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: '"msg": "reload applied"' in service.output(), what="the reload, in JSON",
                   log=service.output)
        assert smtp_deliver(service.host, service.port, make_mail(message_id="<fmt-1@customer.example>"))[0] == 250

        def sent() -> list[dict[str, Any]]:  # written by the outbox sender, a child process
            lines = [json.loads(ln) for ln in service.output().splitlines() if ln.startswith("{")]
            return [e for e in lines if e.get("msg") == "mail sent" and e.get("kind") == "ack_new"]

        wait_until(sent, what="the sender's line in JSON", log=service.output)
        received = [json.loads(ln) for ln in service.output().splitlines()
                    if ln.startswith("{") and '"mail received"' in ln]
        assert received and received[0]["message_id"] == "<fmt-1@customer.example>"
    finally:
        service.stop()
