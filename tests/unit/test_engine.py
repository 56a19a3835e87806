"""rules.engine: every operator, all/any/not nesting, stop, caseless and NFKC-normalised comparison,
header:<Name> fields (RFC 2047 decoded), attachments, received (weekday, business hours), list files,
regex safety (RE2), and the trace line each rule leaves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mailgate.hours import Schedule, parse_schedule
from mailgate.pipeline.parse import parse
from mailgate.rules.conditions import Condition
from mailgate.rules.engine import CompiledRules, Facts, decode_headers
from mailgate.rules.resolve import resolve
from mailgate.rules.schema import Rule, RulesFile, When
from mailgate.yamlfile import Loc


def facts(**overrides: Any) -> Facts:
    base: dict[str, Any] = {
        "sender": "pat@bigbank.example",
        "recipients": ("support@example.com", "outage@example.com"),
        "subject": "Printer on fire in building 3",
        "body": "It burns.",
        "body_full": "It burns.\n\n> old quote",
        "help_topic": "General",
    }
    return Facts(**{**base, **overrides})


def rules(*specs: dict[str, Any]) -> CompiledRules:
    return CompiledRules([Rule.model_validate({"name": f"r{i}", **spec}) for i, spec in enumerate(specs)])


def holds(cond: dict[str, Any], f: Facts | None = None) -> bool:
    matched, trace = rules({"when": {"all": [cond]}}).evaluate(f or facts())
    assert len(trace) == 1 and trace[0].matched == bool(matched)
    return bool(matched)


# --------------------------------------------------------------------------- operators
@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("sender", "equals", "pat@bigbank.example", True),
        ("sender", "equals", "pat@bigbank", False),
        ("sender", "not_equals", "pat@bigbank.example", False),
        ("sender", "not_equals", "someone@else.example", True),
        ("subject", "contains", "on fire", True),
        ("subject", "contains", "flooded", False),
        ("subject", "not_contains", "flooded", True),
        ("subject", "not_contains", "fire", False),
        ("subject", "starts", "printer", True),
        ("subject", "starts", "fire", False),
        ("subject", "ends", "building 3", True),
        ("subject", "ends", "building", False),
        ("subject", "matches", r"building \d+$", True),
        ("subject", "matches", r"^building", False),
        ("subject", "not_matches", r"^building", True),
        ("subject", "not_matches", r"building \d", False),
        ("sender_domain", "in", ["bigbank.example", "other.example"], True),
        ("sender_domain", "in", ["other.example"], False),
        ("recipient", "equals", "outage@example.com", True),  # any of the recipients
        ("recipient", "not_equals", "outage@example.com", False),  # ... and then none may equal it
        ("body", "contains", "burns", True),
        ("body", "contains", "old quote", False),  # body is the new text only
        ("body_full", "contains", "old quote", True),
        ("help_topic", "equals", "general", True),
    ],
)
def test_operator(field: str, op: str, value: Any, expected: bool) -> None:
    assert holds({"field": field, "op": op, "value": value}) is expected


def test_list_value_means_any_of_for_text_operators() -> None:
    assert holds({"field": "subject", "op": "contains", "value": ["flood", "fire"]})
    assert not holds({"field": "subject", "op": "contains", "value": ["flood", "smoke"]})
    assert holds({"field": "subject", "op": "not_contains", "value": ["flood", "smoke"]})
    assert not holds({"field": "subject", "op": "not_contains", "value": ["flood", "fire"]})


def test_regex_is_case_sensitive_unless_the_pattern_says_otherwise() -> None:
    assert not holds({"field": "subject", "op": "matches", "value": "PRINTER"})
    assert holds({"field": "subject", "op": "matches", "value": "(?i)PRINTER"})


# --------------------------------------------------------------------------- normalisation
def test_text_comparisons_are_case_insensitive() -> None:
    assert holds({"field": "sender_domain", "op": "equals", "value": "BigBank.EXAMPLE"})
    assert holds({"field": "subject", "op": "starts", "value": "PRINTER ON"})
    assert holds({"field": "sender_domain", "op": "in", "value": ["BIGBANK.example"]})


def test_unicode_is_nfkc_normalised_and_casefolded() -> None:
    f = facts(subject="ＯＵＴＡＧＥ in der Straße", body="the ﬁle is gone")
    assert holds({"field": "subject", "op": "contains", "value": "outage"}, f)  # full-width letters
    assert holds({"field": "subject", "op": "contains", "value": "STRASSE"}, f)  # ß casefolds to ss
    assert holds({"field": "body", "op": "contains", "value": "file"}, f)  # the ﬁ ligature
    assert holds({"field": "subject", "op": "matches", "value": r"^OUTAGE\b"}, f)  # regex sees NFKC text
    decomposed = facts(subject="Cafe\u0301 ist zu")  # e + combining accent
    assert holds({"field": "subject", "op": "contains", "value": "café"}, decomposed)


# --------------------------------------------------------------------------- header:<Name>
RAW = (
    b"From: Pat <pat@bigbank.example>\r\nTo: support@example.com\r\nSubject: x\r\n"
    b"X-Customer-Tier: =?UTF-8?Q?Gold_=E2=98=85?=\r\nX-Priority: 1 (Highest)\r\n"
    b"X-Tag: one\r\nX-Tag: two\r\n\r\nbody\r\n"
)


def header_facts() -> Facts:
    return facts(headers=decode_headers(parse(RAW).raw_headers))


def test_header_field_is_rfc2047_decoded_and_case_insensitive_by_name() -> None:
    f = header_facts()
    assert holds({"field": "header:X-Customer-Tier", "op": "equals", "value": "gold ★"}, f)
    assert holds({"field": "header:x-customer-tier", "op": "starts", "value": "GOLD"}, f)
    assert holds({"field": "header:X-Priority", "op": "matches", "value": r"^1\b"}, f)


def test_repeated_header_matches_any_occurrence() -> None:
    f = header_facts()
    assert holds({"field": "header:X-Tag", "op": "equals", "value": "two"}, f)
    assert not holds({"field": "header:X-Tag", "op": "not_equals", "value": "two"}, f)


def test_missing_header_holds_only_for_negations() -> None:
    f = header_facts()
    assert not holds({"field": "header:X-Absent", "op": "contains", "value": ""}, f)
    assert holds({"field": "header:X-Absent", "op": "not_contains", "value": "x"}, f)


def test_engine_knows_when_headers_are_needed() -> None:
    assert not rules({"when": {"all": [{"field": "subject", "op": "contains", "value": "x"}]}}).needs_headers
    nested = {"when": {"any": [{"not": {"all": [{"field": "header:X-Spam", "op": "equals", "value": "yes"}]}}]}}
    assert rules(nested).needs_headers


# --------------------------------------------------------------------------- nesting
YES = {"field": "subject", "op": "contains", "value": "fire"}
NO = {"field": "subject", "op": "contains", "value": "flood"}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({}, True),  # no condition: always
        ({"all": [YES, YES]}, True),
        ({"all": [YES, NO]}, False),
        ({"any": [NO, YES]}, True),
        ({"any": [NO, NO]}, False),
        ({"not": NO}, True),
        ({"not": YES}, False),
        ({"not": {"any": [NO, NO]}}, True),
        ({"all": [YES, {"any": [NO, {"not": NO}]}]}, True),
        ({"all": [YES, {"any": [NO, {"not": YES}]}]}, False),
        ({"all": [YES], "any": [NO]}, False),  # both parts must hold
        ({"all": [YES], "any": [YES], "not": NO}, True),
        ({"any": [{"all": [YES, NO]}, {"all": [YES, {"not": NO}]}]}, True),
    ],
)
def test_all_any_not_nesting(when: dict[str, Any], expected: bool) -> None:
    matched, _ = rules({"when": when}).evaluate(facts())
    assert bool(matched) is expected


# --------------------------------------------------------------------------- order, stop, trace
def test_rules_apply_in_order_and_stop_ends_evaluation() -> None:
    compiled = rules(
        {"when": {"all": [NO]}, "then": {"priority": "low"}},
        {"when": {"all": [YES]}, "then": {"priority": "high"}},
        {"when": {"all": [YES]}, "then": {"priority": "emergency"}, "stop": True},
        {"when": {}, "then": {"priority": "normal"}},
    )
    matched, trace = compiled.evaluate(facts())
    assert [name for name, _ in matched] == ["r1", "r2"]
    assert [str(then.priority) for _, then in matched] == ["high", "emergency"]
    assert [(t.name, t.matched) for t in trace] == [("r0", False), ("r1", True), ("r2", True), ("r3", False)]
    assert trace[0].reason == "subject contains 'flood' did not hold"
    assert trace[1].reason == "all conditions held"
    assert trace[3].reason == "not evaluated: 'r2' stopped evaluation"


def test_without_stop_every_matching_rule_applies() -> None:
    matched, trace = rules({"when": {}, "then": {"priority": "high"}}, {"when": {}, "then": {"sla": "x"}}).evaluate(
        facts()
    )
    assert len(matched) == 2 and all(t.matched for t in trace)


def test_trace_explains_any_and_not_failures() -> None:
    _, trace = rules({"when": {"any": [NO, NO]}}, {"when": {"not": YES}}).evaluate(facts())
    assert trace[0].reason == "none of 2 'any' conditions held"
    assert trace[1].reason == "'not' condition held"


# --------------------------------------------------------------------------- attachments
def test_has_attachment_equals_true_or_false() -> None:
    with_file = facts(attachments=("invoice.pdf",))
    assert holds({"field": "has_attachment", "op": "equals", "value": True}, with_file)
    assert not holds({"field": "has_attachment", "op": "equals", "value": True})
    assert holds({"field": "has_attachment", "op": "equals", "value": False})
    assert holds({"field": "has_attachment", "op": "not_equals", "value": "yes"})  # text true/false/yes/no too
    assert not holds({"field": "has_attachment", "op": "not_equals", "value": "true"}, with_file)


def test_an_unnamed_attachment_counts_but_has_no_name() -> None:
    f = facts(attachments=("",))
    assert holds({"field": "has_attachment", "op": "equals", "value": True}, f)
    assert not holds({"field": "attachment_name", "op": "contains", "value": ""}, f)


def test_attachment_name_matches_any_attachment() -> None:
    f = facts(attachments=("Screenshot.PNG", "invoice-42.pdf"))
    assert holds({"field": "attachment_name", "op": "ends", "value": [".exe", ".pdf"]}, f)
    assert holds({"field": "attachment_name", "op": "equals", "value": "screenshot.png"}, f)  # caseless
    assert holds({"field": "attachment_name", "op": "matches", "value": r"^invoice-\d+\.pdf$"}, f)
    assert not holds({"field": "attachment_name", "op": "ends", "value": ".exe"}, f)
    assert holds({"field": "attachment_name", "op": "not_contains", "value": "x"})  # no attachments at all


# --------------------------------------------------------------------------- received: weekday, business hours
BERLIN = parse_schedule({"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}, "holidays": ["2026-12-25"]})
FRI_1630_BERLIN = datetime(2026, 3, 6, 15, 30, tzinfo=UTC)  # 16:30 CET
FRI_2330_UTC = datetime(2026, 3, 6, 23, 30, tzinfo=UTC)  # already Saturday 00:30 in Berlin


def bound(cond: dict[str, Any], schedule: Schedule | None = None) -> CompiledRules:
    rule = Rule.model_validate({"name": "r", "when": {"all": [cond]}})
    c = rule.when.all[0]
    assert isinstance(c, Condition)
    c = c.with_schedule(schedule) if schedule is not None else c
    return CompiledRules([rule.model_copy(update={"when": When(all=[c])})])


def received(compiled: CompiledRules, at: datetime | None) -> bool:
    matched, _ = compiled.evaluate(facts(received_at=at))
    return bool(matched)


def test_business_hours_against_a_named_schedule() -> None:
    open_ = bound({"field": "received.business_hours", "op": "equals", "value": True, "schedule": "b"}, BERLIN)
    closed = bound({"field": "received.business_hours", "op": "equals", "value": False, "schedule": "b"}, BERLIN)
    not_open = bound({"field": "received.business_hours", "op": "not_equals", "value": True, "schedule": "b"}, BERLIN)
    assert received(open_, FRI_1630_BERLIN) and not received(closed, FRI_1630_BERLIN)
    later = FRI_1630_BERLIN + timedelta(hours=1)  # 17:30 in Berlin
    assert not received(open_, later) and received(closed, later) and received(not_open, later)
    christmas = datetime(2026, 12, 25, 10, 0, tzinfo=UTC)  # a Friday, but a holiday
    assert received(closed, christmas)


def test_weekday_is_taken_in_the_schedules_timezone_or_utc() -> None:
    weekend = {"field": "received.weekday", "op": "in", "value": ["sat", "sun"]}
    assert not received(bound(weekend), FRI_2330_UTC)  # UTC: still Friday
    assert received(bound({**weekend, "schedule": "b"}, BERLIN), FRI_2330_UTC)  # Berlin: Saturday
    assert received(bound({"field": "received.weekday", "op": "equals", "value": "Fri"}), FRI_2330_UTC)
    assert received(bound({"field": "received.weekday", "op": "not_equals", "value": "mon"}), FRI_2330_UTC)


def test_received_conditions_do_not_hold_without_a_time() -> None:
    assert not received(bound({"field": "received.weekday", "op": "not_equals", "value": "mon"}), None)


def test_a_schedule_must_be_bound_before_evaluation() -> None:
    with pytest.raises(ValueError, match="schedule 'b' was not bound"):
        rules({"when": {"all": [{"field": "received.business_hours", "op": "equals", "value": True,
                                 "schedule": "b"}]}})


# --------------------------------------------------------------------------- list files
def test_list_file_entries_are_compared_like_a_list(tmp_path: Path) -> None:
    rule = Rule.model_validate({"name": "vip", "when": {"all": [
        {"field": "sender_domain", "op": "in", "value": {"file": "lists/vip.txt"}}]}})
    with pytest.raises(ValueError, match=r"list file 'lists/vip\.txt' was not loaded"):
        CompiledRules([rule])
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "vip.txt").write_text("# VIPs\nBIGBANK.example   # since 2025\n")
    no_where: Callable[[Loc], str] = lambda loc: "rules.yaml:1"  # noqa: E731
    bound_rules, problems = resolve(RulesFile(rules=[rule]), tmp_path, {}, no_where, no_where)
    assert problems == []
    compiled = CompiledRules(bound_rules.rules)
    matched, trace = compiled.evaluate(facts())
    assert matched and trace[0].matched
    _, trace = compiled.evaluate(facts(sender="pat@smallbank.example"))
    assert trace[0].reason == "sender_domain in {file: lists/vip.txt} did not hold"


def test_an_empty_list_matches_nothing_and_its_negation_everything() -> None:
    assert not holds({"field": "subject", "op": "in", "value": []})
    assert not holds({"field": "subject", "op": "starts", "value": []})
    assert holds({"field": "subject", "op": "not_contains", "value": []})


def test_trace_shows_booleans_as_written() -> None:
    _, trace = rules({"when": {"all": [{"field": "has_attachment", "op": "equals", "value": True}]}}).evaluate(facts())
    assert trace[0].reason == "has_attachment equals true did not hold"


# --------------------------------------------------------------------------- regex safety (RE2)
def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    """With Python's re, each of these would backtrack for longer than the test suite's timeout."""
    long_a = "a" * 50_000 + "!"
    for pattern in (r"(a+)+$", r"(a|aa)+$", r"(a*)*b", r"^(\w+\s?)*$"):
        assert not holds({"field": "subject", "op": "matches", "value": pattern}, facts(subject=long_a))
    assert holds({"field": "body", "op": "matches", "value": r"(a+)+!$"}, facts(body=long_a))


@pytest.mark.parametrize("pattern", [r"(a)\1", r"foo(?=bar)", r"(?<!re: )invoice", r"(?!x)y"])
def test_backtracking_only_features_are_refused_at_load(pattern: str) -> None:
    with pytest.raises(ValidationError, match="lookaround and backreferences are not supported"):
        rules({"when": {"all": [{"field": "subject", "op": "matches", "value": pattern}]}})


def test_regex_folds_unicode_case_and_sees_nfkc_text() -> None:
    f = facts(subject="Störung: ＳＥＲＶＥＲ DOWN")
    assert holds({"field": "subject", "op": "matches", "value": "(?i)STÖRUNG"}, f)
    assert holds({"field": "subject", "op": "matches", "value": "SERVER DOWN$"}, f)  # full-width folded by NFKC


def test_addresses_are_caseless() -> None:
    f = facts(sender="Pat@BigBank.EXAMPLE", recipients=("Support@Example.COM",))
    assert holds({"field": "sender", "op": "equals", "value": "pat@bigbank.example"}, f)
    assert holds({"field": "sender_domain", "op": "in", "value": ["bigbank.example"]}, f)
    assert holds({"field": "recipient", "op": "equals", "value": "SUPPORT@example.com"}, f)
