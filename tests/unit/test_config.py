"""load_config / yamlfile: every problem comes out as one exact ``file:line: message``; paths resolve
against the config file's folder."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from mailgate.config import load_config, parse_duration
from mailgate.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent.parent

MAIN = """\
state_dir: ../var
database: {url: "sqlite:///../var/mailgate.db"}
intake:
  addresses: [support@example.com]
outbound:
  from: "Example Support <support@example.com>"
  maildir: ../var/outgoing
rules: rules.yaml
agents: agents.yaml
sla: sla.yaml
"""

RULES = """\
help_topics:
  - name: Outage
    department: Sys Admin
    priority: emergency
    sla: critical
  - name: General
    department: Support
    sla: standard
default_help_topic: General
rules:
  - name: vip
    when: {all: [{field: sender_domain, op: equals, value: bigbank.example}]}
    then: {priority: high, assignee: jane@example.com}
"""

AGENTS = """\
agents:
  - {name: Jane Doe, email: jane@example.com}
departments:
  - {name: Sys Admin, manager: jane@example.com, members: [jane@example.com]}
  - {name: Support, members: [jane@example.com]}
"""

SLA = """\
schedules:
  business: {timezone: Europe/Berlin, hours: {mon-fri: "09:00-17:00"}}
sla_plans:
  critical: {first_response: 1h, resolution: 4h}
  standard: {first_response: 8h, resolution: 3d, schedule: business}
"""


def write(folder: Path, *, main: str = MAIN, rules: str = RULES, agents: str = AGENTS, sla: str = SLA) -> Path:
    conf = folder / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for name, text in (("mailgate.yaml", main), ("rules.yaml", rules), ("agents.yaml", agents), ("sla.yaml", sla)):
        (conf / name).write_text(textwrap.dedent(text))
    return conf / "mailgate.yaml"


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# --------------------------------------------------------------------------- a valid config
def test_valid_config_loads_with_typed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    assert config.sla.sla_plans["standard"].resolution == timedelta(days=3)
    assert config.rules.rules[0].then.assignee == "jane@example.com"
    assert config.main.intake.addresses == ["support@example.com"]


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path(os.path.relpath(path, elsewhere)))  # even a relative path to the config itself
    assert config.path == path
    assert config.main.state_dir == tmp_path / "var"
    assert config.main.rules == tmp_path / "conf" / "rules.yaml"
    assert config.main.outbound.maildir == tmp_path / "var" / "outgoing"
    assert config.database_url == f"sqlite:///{tmp_path / 'var' / 'mailgate.db'}"


def test_absolute_and_non_sqlite_urls_are_left_alone(tmp_path: Path) -> None:
    pg = "postgresql+psycopg://mailgate@db.example/mailgate"
    config = load_config(write(tmp_path, main=MAIN.replace('"sqlite:///../var/mailgate.db"', f'"{pg}"')))
    assert config.database_url == pg
    absolute = f"sqlite:///{tmp_path}/abs.db"
    config = load_config(write(tmp_path, main=MAIN.replace('"sqlite:///../var/mailgate.db"', f'"{absolute}"')))
    assert config.database_url == absolute


def test_default_database_lives_in_the_state_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, main=MAIN.replace('database: {url: "sqlite:///../var/mailgate.db"}\n', "")))
    assert config.database_url == f"sqlite:///{tmp_path / 'var' / 'mailgate.db'}"


def test_the_demo_config_loads() -> None:
    config = load_config(REPO / "config" / "mailgate.yaml")
    assert config.main.state_dir == REPO / "var"
    assert config.rules.default_help_topic == "General"


# --------------------------------------------------------------------------- one file's problems
def test_unknown_field(tmp_path: Path) -> None:
    path = write(tmp_path, main=MAIN.replace("  maildir:", "  maildri:"))
    assert problems(path) == [f"{path}:7: unknown field 'maildri'"]


def test_missing_field(tmp_path: Path) -> None:
    path = write(tmp_path, main=MAIN.replace('  from: "Example Support <support@example.com>"\n', ""))
    assert problems(path) == [f"{path}:5: missing field 'from'"]


def test_bad_duration(tmp_path: Path) -> None:
    path = write(tmp_path, sla=SLA.replace("resolution: 3d", "resolution: 3 dayz"))
    rules_dir = path.parent
    assert problems(path) == [
        f"{rules_dir / 'sla.yaml'}:5: not a duration: '3 dayz' (use e.g. 30s, 15m, 8h, 3d)",
    ]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("8h", 28800), ("3d", 259200), (90, 90)])
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_bad_regex_in_a_rule(tmp_path: Path) -> None:
    rules = RULES.replace(
        "{field: sender_domain, op: equals, value: bigbank.example}", '{field: subject, op: matches, value: "(outage"}'
    )
    path = write(tmp_path, rules=rules)
    assert problems(path) == [
        f"{path.parent / 'rules.yaml'}:12: bad regular expression '(outage': "
        "missing ), unterminated subpattern at position 0"
    ]


def test_bad_regex_in_a_help_topic(tmp_path: Path) -> None:
    rules = RULES.replace("    sla: critical\n", '    sla: critical\n    recognise: {subject: "[a-"}\n')
    path = write(tmp_path, rules=rules)
    [problem] = problems(path)
    assert problem.startswith(f"{path.parent / 'rules.yaml'}:6: bad regular expression '[a-': ")


def test_unknown_operator_is_one_clear_problem(tmp_path: Path) -> None:
    rules = RULES.replace("op: equals", "op: containz")
    path = write(tmp_path, rules=rules)
    assert problems(path) == [
        f"{path.parent / 'rules.yaml'}:12: unknown operator 'containz' (use one of: equals, not_equals, contains, "
        "not_contains, starts, ends, matches, not_matches, in)"
    ]


def test_unknown_rule_field_and_typo_in_a_group(tmp_path: Path) -> None:
    rules = RULES.replace(
        "    when: {all: [{field: sender_domain, op: equals, value: bigbank.example}]}\n",
        "    when:\n      any:\n        - {field: sendr, op: equals, value: x}\n        - {alll: []}\n",
    )
    path = write(tmp_path, rules=rules)
    assert problems(path) == [
        f"{path.parent / 'rules.yaml'}:14: unknown field 'sendr'",
        f"{path.parent / 'rules.yaml'}:15: unknown field 'alll'",
    ]


def test_bad_enum_value_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, rules=RULES.replace("priority: emergency", "priority: urgent"))
    assert problems(path) == [
        f"{path.parent / 'rules.yaml'}:4: priority: Input should be 'low', 'normal', 'high' or 'emergency'"
    ]


def test_wrong_type_for_a_union_field_is_one_problem(tmp_path: Path) -> None:
    path = write(tmp_path, rules=RULES.replace("value: bigbank.example", "value: 500"))
    assert problems(path) == [f"{path.parent / 'rules.yaml'}:12: value: Input should be a valid string or a valid list"]


def test_missing_condition_key_inside_a_group(tmp_path: Path) -> None:
    path = write(tmp_path, rules=RULES.replace("op: equals, ", ""))
    assert problems(path) == [f"{path.parent / 'rules.yaml'}:12: missing field 'op'"]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, rules=RULES.replace("  - name: General\n", "  - name: General\n   bad: [unclosed\n"))
    [problem] = problems(path)
    assert problem.startswith(f"{path.parent / 'rules.yaml'}:7: YAML syntax error: ")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path, rules=RULES.replace("    sla: standard\n", "    sla: standard\n    sla: critical\n"))
    assert problems(path) == [f"{path.parent / 'rules.yaml'}:9: duplicate key 'sla'"]


def test_missing_included_file(tmp_path: Path) -> None:
    path = write(tmp_path)
    (path.parent / "agents.yaml").unlink()
    assert problems(path) == [f"{path.parent / 'agents.yaml'}:1: file not found"]


def test_problems_in_several_files_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        rules=RULES.replace("priority: emergency", "priority: urgent"),
        sla=SLA.replace("first_response: 1h", "first_response: soon"),
    )
    assert problems(path) == [
        f"{path.parent / 'rules.yaml'}:4: priority: Input should be 'low', 'normal', 'high' or 'emergency'",
        f"{path.parent / 'sla.yaml'}:4: not a duration: 'soon' (use e.g. 30s, 15m, 8h, 3d)",
    ]


# --------------------------------------------------------------------------- references across files
def test_unknown_help_topic(tmp_path: Path) -> None:
    path = write(tmp_path, rules=RULES.replace("default_help_topic: General", "default_help_topic: Genral"))
    assert problems(path) == [f"{path.parent / 'rules.yaml'}:9: unknown help topic 'Genral'"]


def test_unknown_department_sla_plan_and_agent(tmp_path: Path) -> None:
    rules = (
        RULES.replace("department: Sys Admin", "department: SysAdmin")
        .replace("sla: standard", "sla: gold")
        .replace("assignee: jane@example.com", "assignee: joe@example.com")
    )
    path = write(tmp_path, rules=rules)
    rules_yaml = path.parent / "rules.yaml"
    assert problems(path) == [
        f"{rules_yaml}:3: unknown department 'SysAdmin'",
        f"{rules_yaml}:8: unknown SLA plan 'gold'",
        f"{rules_yaml}:13: unknown agent 'joe@example.com'",
    ]


def test_unknown_help_topic_in_a_rule_action(tmp_path: Path) -> None:
    path = write(tmp_path, rules=RULES.replace("then: {priority: high,", "then: {help_topic: Outages, priority: high,"))
    assert problems(path) == [f"{path.parent / 'rules.yaml'}:13: unknown help topic 'Outages'"]


def test_unknown_agent_in_a_department(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        agents=AGENTS.replace(
            "members: [jane@example.com]}\n  - {name: Support", "members: [jim@example.com]}\n  - {name: Support"
        ),
    )
    assert problems(path) == [f"{path.parent / 'agents.yaml'}:4: unknown agent 'jim@example.com'"]


def test_unknown_schedule(tmp_path: Path) -> None:
    path = write(tmp_path, sla=SLA.replace("schedule: business", "schedule: office"))
    assert problems(path) == [f"{path.parent / 'sla.yaml'}:5: unknown schedule 'office'"]


def test_duplicate_rule_name(tmp_path: Path) -> None:
    rules = RULES + "  - name: vip\n    then: {priority: low}\n"
    path = write(tmp_path, rules=rules)
    assert problems(path) == [f"{path.parent / 'rules.yaml'}:14: duplicate rule name 'vip'"]
