"""``intake.spam`` and ``intake.flood`` as the admin writes them, and the rule fields the verdict gives:
every bad value is one ``file:line: message``; the rules engine compares ``spam``, ``spam_score``, ``dmarc``."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailgate.config import load_config
from mailgate.config.intake_policy import parse_rung
from mailgate.errors import ConfigError
from mailgate.pipeline.flood import _over
from mailgate.rules.engine import CompiledRules, Facts
from mailgate.rules.schema import Rule
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parent.parent.parent

MAIN = """\
state_dir: ../var
intake:
  addresses: [support@example.com]
  spam:
    trusted_relays: [192.0.2.0/24, "2001:db8::25", mx1.example.com]
    action: topic:Junk
  flood:
    per_sender: "15/10x"
    per_domain: ["60/10m", 5]
    exempt_domains: ["not a domain"]
outbound:
  from: support@example.com
rules: rules.yaml
agents: agents.yaml
sla: sla.yaml
"""


def _config_dir(tmp_path: Path, main: str) -> Path:
    for name in ("rules.yaml", "agents.yaml", "sla.yaml"):
        shutil.copy(REPO / "config" / name, tmp_path / name)
    (tmp_path / "mailgate.yaml").write_text(main)
    return tmp_path / "mailgate.yaml"


def test_bad_values_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = _config_dir(tmp_path, MAIN)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    assert any(p.startswith(f"{path}:5: trusted relay 'mx1.example.com' is not an IP address") for p in problems)
    assert any(p.startswith(f"{path}:8: not a rung: '15/10x'") for p in problems), problems
    assert any(p.startswith(f"{path}:9: a rung is COUNT/DURATION") for p in problems), problems
    assert f"{path}:10: not a domain: 'not a domain'" in problems, problems
    assert len(problems) == 4, problems
    # the CLI says the same, and exits 1
    result = run_cli(path, "check-config")
    assert result.code == 1 and f"{path}:5: trusted relay" in result.stderr, result.stderr


def test_the_spam_topic_must_exist(tmp_path: Path) -> None:
    main = MAIN.replace(', mx1.example.com]', ']').replace('"15/10x"', '"15/10m"').replace(', 5]', ']')
    path = _config_dir(tmp_path, main.replace('["not a domain"]', "[partner.example]"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [f"{path}:6: unknown help topic 'Junk'"]
    config = load_config(_config_dir(tmp_path, main.replace("topic:Junk", "topic:General")
                                     .replace('["not a domain"]', "[partner.example]")))
    flood = config.main.intake.flood
    assert flood is not None and flood.per_sender == [parse_rung("15/10m")] and flood.exempt_domains == [
        "partner.example"]
    assert not flood.per_domain_applies("gmail.com") and flood.per_domain_applies("customer.example")
    assert config.main.intake.spam.topic == "General"


def test_a_ladder_holds_the_mail_that_would_be_one_over_a_rung() -> None:
    now = datetime(2026, 3, 2, 10, tzinfo=UTC)
    ladder = [parse_rung("3/10m"), parse_rung("5/1h")]
    recent = [now - timedelta(minutes=m) for m in (1, 2, 3)]
    assert _over(recent[:2], ladder, now) is None
    assert _over(recent, ladder, now) == ladder[0]
    spread = [now - timedelta(minutes=m) for m in (1, 20, 30, 40, 50)]
    assert _over(spread, ladder, now) == ladder[1]
    assert _over([now - timedelta(minutes=m) for m in (11, 12, 13)], ladder, now) is None


def _rule(name: str, field: str, op: str, value: object) -> Rule:
    return Rule.model_validate({"name": name, "when": {"all": [{"field": field, "op": op, "value": value}]}})


def test_rule_fields_spam_score_and_dmarc() -> None:
    rules = CompiledRules([
        _rule("is-spam", "spam", "equals", True),
        _rule("high", "spam_score", "above", 5),
        _rule("at-most-5", "spam_score", "at_most", "5"),
        _rule("dmarc-fail", "dmarc", "equals", "fail"),
        _rule("no-dmarc", "dmarc", "equals", "unknown"),
    ])

    def matched(**verdict: object) -> set[str]:
        facts = Facts("a@b.example", ("support@example.com",), "s", "b", "b", None, **verdict)  # type: ignore[arg-type]
        with_trace = {name for name, _ in rules.evaluate(facts, explain=True)[0]}
        assert with_trace == {name for name, _ in rules.evaluate(facts, explain=False)[0]}  # gates agree
        return with_trace

    assert matched(spam=True, spam_score=7.5, dmarc="fail") == {"is-spam", "high", "dmarc-fail"}
    assert matched(spam=False, spam_score=5.0, dmarc="pass") == {"at-most-5"}
    assert matched() == {"no-dmarc"}  # no trusted verdict: no score is above or below anything


@pytest.mark.parametrize(("field", "op", "value", "message"), [
    ("spam_score", "contains", 5, "is a number"),
    ("subject", "above", "5", "compares numbers"),
    ("spam_score", "above", "lots", "compares with a number"),
    ("spam_score", "above", "nan", "compares with a number"),
    ("spam", "contains", "yes", "takes only equals or not_equals"),
])
def test_rule_field_misuse_is_refused(field: str, op: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _rule("x", field, op, value)
