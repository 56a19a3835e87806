"""The rules vocabulary through the real CLI: ``check-config`` lists every problem as file:line and exits 1;
``rules test`` shows team, tags and the action a rule chose, and reads list files relative to rules.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.conftest import REPO, MakeConfig, cli_json, make_mail, run_cli

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}, {"name": "Jerry Sys", "email": "jerry@example.com"}],
    "departments": [{"name": "Support", "manager": "jane@example.com", "members": ["jane@example.com"]}],
    "teams": [{"name": "Tier 2", "members": ["jerry@example.com"]}],
}
SLA = {
    "schedules": {"business": {"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}}},
    "sla_plans": {"standard": {"first_response": "8h", "resolution": "3d", "schedule": "business"}},
}


def rules(*extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "help_topics": [{"name": "General", "department": "Support", "sla": "standard"}],
        "default_help_topic": "General",
        "rules": [
            {
                "name": "vip-list",
                "when": {"all": [{"field": "sender_domain", "op": "in", "value": {"file": "lists/vip.txt"}}]},
                "then": {"assignee": "round_robin:Tier 2", "team": "Tier 2", "tags": ["vip"]},
            },
            *extra,
        ],
    }


def configured(make_config: MakeConfig, *extra: dict[str, Any]) -> Path:
    path = make_config(rules=rules(*extra), agents=AGENTS, sla=SLA)
    (path.parent / "lists").mkdir(exist_ok=True)
    (path.parent / "lists" / "vip.txt").write_text("# VIP customers\nbigbank.example\n")
    return path


def test_the_demo_config_checks_out() -> None:
    result = run_cli(REPO / "config" / "mailgate.yaml", "check-config")
    assert result.code == 0, result.stderr


def test_check_config_lists_every_problem_and_exits_1(make_config: MakeConfig) -> None:
    path = configured(
        make_config,
        {"name": "vip-list", "when": {"all": [{"field": "subject", "op": "containz", "value": "x"}]}},
        {"name": "weekend", "when": {"all": [{"field": "received.weekday", "op": "in", "value": ["sat", "sun"],
                                              "schedule": "office"}]},
         "then": {"reply": "weekend_notice", "team": "Tier 3"}},
        {"name": "catch-all", "then": {"tags": ["seen"]}, "stop": True},
        {"name": "too-late", "then": {"assignee": "joe@example.com"}},
    )
    (path.parent / "lists" / "vip.txt").write_text("bigbank.example\ncfo@bigbank.example\n")
    result = run_cli(path, "check-config")
    rules_yaml, vip = path.parent / "rules.yaml", path.parent / "lists" / "vip.txt"
    assert result.code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [  # each file's problems in line order
        f"{rules_yaml}:19: duplicate rule name 'vip-list'",
        f"{rules_yaml}:23: unknown operator 'containz' (use one of: equals, not_equals, contains, not_contains, "
        "starts, ends, matches, not_matches, in, above, below, at_least, at_most)",
        f"{rules_yaml}:33: unknown schedule 'office'",
        f"{rules_yaml}:35: unknown template 'weekend_notice' (no {REPO / 'templates' / 'weekend_notice.txt.j2'})",
        f"{rules_yaml}:36: unknown team 'Tier 3'",
        f"{rules_yaml}:42: rule 'too-late' is unreachable: 'catch-all' matches every mail and stops",
        f"{rules_yaml}:44: unknown agent 'joe@example.com'",
        f"{vip}:2: 'cfo@bigbank.example' is an address; sender_domain compares domains",
    ]


def test_rules_test_reports_team_tags_and_the_list_file_match(make_config: MakeConfig, tmp_path: Path) -> None:
    path = configured(make_config)
    (tmp_path / "vip.eml").write_bytes(make_mail("Wire failed", sender="CFO <CFO@BigBank.example>"))
    report = cli_json(path, "rules", "test", str(tmp_path / "vip.eml"))
    assert report["result"]["team"] == "Tier 2"
    assert report["result"]["tags"] == ["vip"]
    assert report["result"]["assignee"] == "jerry@example.com"  # round robin in Tier 2, chosen as serve would
    assert report["result"]["action"] == "accept"
    assert report["rules"] == [{"name": "vip-list", "matched": True, "reason": "all conditions held"}]
    assert report["changes"] == ["rule vip-list set team=Tier 2", "rule vip-list set assignee=round_robin:Tier 2",
                                 "rule vip-list added tags vip", "round_robin in team Tier 2 chose jerry@example.com"]
    text = run_cli(path, "rules", "test", str(tmp_path / "vip.eml"))
    assert "  tags        vip" in text.stdout and "rule vip-list added tags vip" in text.stdout

    # the same mail once it is stored: still the whole trace, and the duplicate said, not a stop
    assert run_cli(path, "ingest", str(tmp_path / "vip.eml")).code == 0
    stored = cli_json(path, "rules", "test", str(tmp_path / "vip.eml"))
    assert stored["rules"] == report["rules"] and stored["result"] == report["result"]
    assert re.search(r"already stored as inbound #\d+", stored["outcome"]["reason"]), stored["outcome"]


def test_rules_test_shows_discard_and_quarantine(make_config: MakeConfig, tmp_path: Path) -> None:
    path = configured(
        make_config,
        {"name": "newsletters", "when": {"all": [{"field": "header:List-Id", "op": "contains", "value": "news"}]},
         "then": {"discard": True}},
        {"name": "executables", "when": {"all": [{"field": "attachment_name", "op": "ends", "value": [".exe"]}]},
         "then": {"quarantine": "executable attachment"}, "stop": True},
    )
    (tmp_path / "news.eml").write_bytes(make_mail("Our news", headers={"List-Id": "<news.shop.example>"}))
    assert cli_json(path, "rules", "test", str(tmp_path / "news.eml"))["result"]["action"] == "discard"

    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "x@shady.example", "support@example.com", "invoice"
    msg.set_content("see attached")
    msg.add_attachment(b"MZ", maintype="application", subtype="octet-stream", filename="Invoice.PDF.EXE")
    (tmp_path / "exe.eml").write_bytes(msg.as_bytes())
    report = cli_json(path, "rules", "test", str(tmp_path / "exe.eml"))
    assert report["result"]["action"] == "quarantine"
    assert "rule executables quarantines the mail: executable attachment" in report["changes"]
