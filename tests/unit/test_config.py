"""load_config / yamlfile: every problem comes out as one exact ``file:line: message``; paths resolve
against the config file's folder."""

from __future__ import annotations

import os
import shutil
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import load_config, parse_duration
from mailgate.errors import ConfigError
from mailgate.rules.conditions import Condition, ListFile

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
        f"{path.parent / 'rules.yaml'}:12: bad regular expression '(outage': missing ): (outage"
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
        "not_contains, starts, ends, matches, not_matches, in, above, below, at_least, at_most)"
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
    path = write(tmp_path, rules=RULES.replace("value: bigbank.example", "value: {domain: bigbank.example}"))
    assert problems(path) == [
        f"{path.parent / 'rules.yaml'}:12: value must be text, a list of texts, true/false, or {{file: <list file>}}"
    ]


def test_a_number_is_text(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, rules=RULES.replace("value: bigbank.example", "value: [500, 1.5]")))
    assert config.rules.rules[0].when.all[0].value == ["500", "1.5"]  # type: ignore[union-attr]


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


# --------------------------------------------------------------------------- the rules vocabulary (Step 3)
TEAMS = AGENTS + "teams:\n  - {name: Tier 2, members: [jane@example.com]}\n"

# Block style, so each problem has a line of its own.
FULL_RULES = """\
help_topics:
  - name: General
    department: Support
    sla: standard
default_help_topic: General
rules:
  - name: catch-up
    when:
      all:
        - field: sender_domain
          op: in
          value: {file: lists/vip-domains.txt}
        - field: received.business_hours
          op: equals
          value: false
          schedule: business
        - field: received.weekday
          op: in
          value: [sat, sun]
        - field: has_attachment
          op: equals
          value: true
    then:
      assignee: round_robin:Tier 2
      team: Tier 2
      status: in_progress
      tags: [vip, after-hours]
      collaborators: [Boss@BigBank.example]
      no_autoreply: true
      reply: ack_new
  - name: spam
    when:
      any:
        - field: attachment_name
          op: ends
          value: [.exe, .scr]
    then:
      quarantine: executable attachment
"""


def write_rules(tmp_path: Path, rules: str, *, lists: dict[str, str | bytes] | None = None, **files: str) -> Path:
    path = write(tmp_path, rules=rules, agents=files.pop("agents", TEAMS), **files)
    default = {"lists/vip-domains.txt": "# VIP customers\nbigbank.example\n\nBigCorp.example   # since 2025\n"}
    for name, content in (default if lists is None else lists).items():
        target = path.parent / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return path


def rules_problems(tmp_path: Path, rules: str, **kw: Any) -> list[str]:
    path = write_rules(tmp_path, rules, **kw)
    return [p.replace(f"{path.parent}/", "") for p in problems(path)]


def test_the_full_vocabulary_loads_and_binds_list_files_and_schedules(tmp_path: Path) -> None:
    config = load_config(write_rules(tmp_path, FULL_RULES))
    rule = config.rules.rules[0]
    listed, hours, _, _ = rule.when.all
    assert isinstance(listed, Condition) and isinstance(listed.value, ListFile)
    assert listed.value.entries == ("bigbank.example", "BigCorp.example")  # comments and blank lines skipped
    assert listed.value.path == tmp_path / "conf" / "lists" / "vip-domains.txt"
    assert isinstance(hours, Condition) and hours.bound_schedule is not None
    assert str(hours.bound_schedule.tz) == "Europe/Berlin"
    assert rule.then.assign_strategy == "round_robin" and rule.then.assign_team == "Tier 2"
    assert rule.then.agent is None
    assert rule.then.collaborators == ["boss@bigbank.example"]  # addresses are caseless
    assert config.rules.list_files() == [tmp_path / "conf" / "lists" / "vip-domains.txt"]


def test_list_files_resolve_relative_to_rules_yaml_not_the_main_config(tmp_path: Path) -> None:
    path = write_rules(tmp_path, FULL_RULES, main=MAIN.replace("rules: rules.yaml", "rules: routing/rules.yaml"),
                       lists={"routing/lists/vip-domains.txt": "bigbank.example\n"})
    (path.parent / "routing" / "rules.yaml").write_text(FULL_RULES)
    config = load_config(path)
    assert config.rules.list_files() == [tmp_path / "conf" / "routing" / "lists" / "vip-domains.txt"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    rules = (
        FULL_RULES.replace("op: in\n          value: {file", "op: inside\n          value: {file")
        .replace("schedule: business", "schedule: office")
        .replace("field: received.weekday", "field: received.day")
        .replace("round_robin:Tier 2", "least_loaded:Tier 3")
        .replace("team: Tier 2", "team: Tier 3")
        .replace("reply: ack_new", "reply: thanks")
        .replace("      quarantine: executable attachment", "      help_topic: Malware\n      sla: gold")
        .replace("op: ends\n          value: [.exe, .scr]", "op: matches\n          value: '(\\w+)\\.\\1'")
    )
    rules += "  - name: spam\n    then: {department: Nobody}\n  - name: everything\n    stop: true\n"
    rules += "  - name: never\n    then: {assignee: joe@example.com}\n"
    # Errors in the file's own shapes, and dangling references from the rules that are valid, in line order:
    assert rules_problems(tmp_path, rules, lists={}) == [
        "rules.yaml:11: unknown operator 'inside' (use one of: equals, not_equals, contains, not_contains, "
        "starts, ends, matches, not_matches, in, above, below, at_least, at_most)",
        "rules.yaml:17: unknown field 'received.day'",
        "rules.yaml:36: bad regular expression '(\\w+)\\.\\1': invalid escape sequence: \\1 "
        "(lookaround and backreferences are not supported: patterns must match in linear time)",
        "rules.yaml:40: duplicate rule name 'spam'",
        "rules.yaml:41: unknown department 'Nobody'",
        "rules.yaml:44: rule 'never' is unreachable: 'everything' matches every mail and stops",
        "rules.yaml:45: unknown agent 'joe@example.com'",
    ]
    # With those fixed, the rules that were left out are cross-checked too:
    rules = rules.replace("op: inside", "op: in").replace("received.day", "received.weekday")
    rules = rules.replace("'(\\w+)\\.\\1'", "'\\.exe$'")
    assert rules_problems(tmp_path, rules, lists={}) == [
        "rules.yaml:12: list file 'lists/vip-domains.txt' not found",
        "rules.yaml:16: unknown schedule 'office'",
        "rules.yaml:24: unknown team 'Tier 3'",
        "rules.yaml:25: unknown team 'Tier 3'",
        f"rules.yaml:30: unknown template 'thanks' (no {REPO / 'templates' / 'thanks.txt.j2'})",
        "rules.yaml:38: unknown help topic 'Malware'",
        "rules.yaml:39: unknown SLA plan 'gold'",
        "rules.yaml:40: duplicate rule name 'spam'",
        "rules.yaml:41: unknown department 'Nobody'",
        "rules.yaml:44: rule 'never' is unreachable: 'everything' matches every mail and stops",
        "rules.yaml:45: unknown agent 'joe@example.com'",
    ]


def test_unreachable_rule_after_a_catch_all_stop(tmp_path: Path) -> None:
    rules = RULES + "  - name: the-rest\n    then: {priority: low}\n    stop: true\n  - name: late\n"
    assert rules_problems(tmp_path, rules) == ["rules.yaml:17: rule 'late' is unreachable: "
                                               "'the-rest' matches every mail and stops"]


def test_unknown_field_in_then(tmp_path: Path) -> None:
    assert rules_problems(tmp_path, RULES.replace("then: {priority: high,", "then: {priorty: high,")) == [
        "rules.yaml:13: unknown field 'priorty'"
    ]


def test_help_topic_condition_must_name_a_topic(tmp_path: Path) -> None:
    rules = RULES.replace("field: sender_domain, op: equals, value: bigbank.example",
                          "field: help_topic, op: in, value: [general, Outages]")
    assert rules_problems(tmp_path, rules) == ["rules.yaml:12: unknown help topic 'Outages'"]  # caseless, like matching


def test_help_topic_ack_template_must_exist(tmp_path: Path) -> None:
    rules = RULES.replace("    sla: standard\n", "    sla: standard\n    ack_template: welcome\n")
    assert rules_problems(tmp_path, rules) == [
        f"rules.yaml:9: unknown template 'welcome' (no {REPO / 'templates' / 'welcome.txt.j2'})"
    ]


def test_a_canned_reply_template_in_the_configured_folder_is_found(tmp_path: Path) -> None:
    folder = tmp_path / "tpl"
    shutil.copytree(REPO / "templates", folder)
    (folder / "thanks.txt.j2").write_text("Thanks, {{ requester.name }}.\n")
    main = MAIN + f"templates: {folder}\n"
    config = load_config(write_rules(tmp_path, RULES.replace("then: {", "then: {reply: thanks, "), main=main))
    assert config.rules.rules[0].then.reply == "thanks"


def test_team_members_must_be_agents(tmp_path: Path) -> None:
    agents = AGENTS + "teams:\n  - name: Tier 2\n    members: [jane@example.com, jim@example.com]\n"
    assert rules_problems(tmp_path, RULES, agents=agents) == ["agents.yaml:8: unknown agent 'jim@example.com'"]


def test_a_broken_schedule_a_rule_uses_is_reported_in_sla_yaml(tmp_path: Path) -> None:
    sla = SLA.replace("timezone: Europe/Berlin", "timezone: Europe/Berlyn")
    assert rules_problems(tmp_path, FULL_RULES, sla=sla) == [
        "sla.yaml:2: schedule 'business': unknown timezone 'Europe/Berlyn'"
    ]


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("{field: has_attachment, op: contains, value: pdf}",
         "field 'has_attachment' takes only equals or not_equals, not 'contains'"),
        ("{field: has_attachment, op: equals, value: maybe}", "field 'has_attachment' takes true or false"),
        ("{field: received, op: equals, value: x}",
         "unknown field 'received' (use received.business_hours or received.weekday)"),
        ("{field: received.business_hours, op: equals, value: true}",
         "received.business_hours needs 'schedule: <name of a schedule in sla.yaml>'"),
        ("{field: received.weekday, op: in, value: [sat, sunday]}",
         "unknown weekday 'sunday' (use mon, tue, wed, thu, fri, sat, sun)"),
        ("{field: received.weekday, op: in, value: sat}",
         "received.weekday: 'in' takes a list of days, equals/not_equals one day (mon..sun)"),
        ("{field: received.weekday, op: contains, value: sat}",
         "field 'received.weekday' takes only equals, not_equals or in, not 'contains'"),
        ("{field: subject, op: equals, value: x, schedule: business}",
         "'schedule' applies only to received.business_hours and received.weekday"),
        ("{field: subject, op: in, value: urgent}", "operator 'in' needs a list value or {file: <list file>}"),
        ("{field: subject, op: matches, value: [a, b]}", "operator 'matches' needs a string value"),
        ("{field: header:X-Spam, op: equals, value: yes}",
         "field 'header:X-Spam' compares text: YAML reads yes/no/true/false/on/off as true or false: "
         "put text in quotes"),
        ("{field: subject, op: matches, value: '(?<!re: )invoice'}",
         "bad regular expression '(?<!re: )invoice': invalid perl operator: (?<! "
         "(lookaround and backreferences are not supported: patterns must match in linear time)"),
        ("{field: subject, op: equals, value: null}", 'value is empty (write value: "" to compare with empty text)'),
    ],
)
def test_condition_problems(tmp_path: Path, condition: str, message: str) -> None:
    rules = RULES.replace("{field: sender_domain, op: equals, value: bigbank.example}", condition)
    assert rules_problems(tmp_path, rules) == [f"rules.yaml:12: {message}"]


@pytest.mark.parametrize(
    ("then", "message"),
    [
        ("{assignee: roundrobin:Tier 2}", "unknown assignment strategy 'roundrobin' (use round_robin or least_loaded)"),
        ("{assignee: jane}",
         "assignee must be an agent's address, round_robin:<team> or least_loaded:<team>, not 'jane'"),
        ("{assignee: 'least_loaded:Tier 9'}", "unknown team 'Tier 9'"),
        ("{collaborators: [boss]}", "not an email address: 'boss'"),
        ("{tags: [vip, ' ']}", "a tag may not be empty"),
        ("{status: pending}",
         "status: Input should be 'open', 'in_progress', 'awaiting_reply', 'resolved' or 'closed'"),
        ("{reply: ../../etc/passwd}",
         "reply names a template (templates/<name>.txt.j2), not a path: '../../etc/passwd'"),
        ("{reject: ' '}", "give the text (reject: the bounce text; quarantine: the reason)"),
        ("{reject: go away, discard: true}",
         "a rule can do only one of reject, discard and quarantine (got reject and discard)"),
    ],
)
def test_action_problems(tmp_path: Path, then: str, message: str) -> None:
    rules = RULES.replace("{priority: high, assignee: jane@example.com}", then)
    assert rules_problems(tmp_path, rules) == [f"rules.yaml:13: {message}"]


def test_list_file_problems_name_the_list_file_and_line(tmp_path: Path) -> None:
    rules = FULL_RULES
    text = "bigbank.example\n# ok\ncfo@bigbank.example\nbig corp.example\n"
    lists: dict[str, str | bytes] = {"lists/vip-domains.txt": text}
    assert rules_problems(tmp_path, rules, lists=lists) == [
        "lists/vip-domains.txt:3: 'cfo@bigbank.example' is an address; sender_domain compares domains",
        "lists/vip-domains.txt:4: 'big corp.example' is not one address or domain (one entry per line)",
    ]
    lists = {"lists/vip-domains.txt": b"bigbank.example\nm\xfcller.example\n"}
    assert rules_problems(tmp_path, rules, lists=lists) == ["lists/vip-domains.txt:2: list file is not UTF-8 text"]


def test_a_list_file_shared_by_two_rules_is_read_once_and_reported_once(tmp_path: Path) -> None:
    rules = FULL_RULES + (
        "  - name: vip-too\n    when: {all: [{field: recipient, op: in, value: {file: lists/vip-domains.txt}}]}\n"
    )
    lists = {"lists/vip-domains.txt": "a b\n"}
    assert rules_problems(tmp_path, rules, lists=lists) == [
        "lists/vip-domains.txt:1: 'a b' is not one address or domain (one entry per line)",
    ]


def test_a_broken_help_topic_still_counts_as_existing(tmp_path: Path) -> None:
    """While rules.yaml has errors its valid parts are cross-checked; a topic with an error is no dangling name."""
    rules = RULES.replace("    sla: standard\n", '    sla: standard\n    recognise: {subject: "(?=x)"}\n')
    rules = rules.replace("then: {priority: high,", "then: {help_topic: General, priority: high,")
    assert rules_problems(tmp_path, rules) == [
        "rules.yaml:9: bad regular expression '(?=x)': invalid perl operator: (?= "
        "(lookaround and backreferences are not supported: patterns must match in linear time)"
    ]
