"""Help topics and routing rules as admins write them in rules.yaml, validated at load.

Regexes are compiled here (RE2, see ``regex.py``), once, so a bad pattern is a
load-time error with file:line and never a surprise while mail is flowing.
What a rule names in other files (list files, schedules, agents, templates) is
checked and bound by ``resolve.py`` and ``config.py`` at load, too.

Condition fields:

- text: ``sender``, ``sender_domain``, ``recipient`` (To, Cc and the envelope),
  ``subject``, ``body`` (the new text of a reply), ``body_full`` (with the quoted
  history), ``help_topic``, ``attachment_name``, ``header:<Name>``;
- ``has_attachment``: ``equals``/``not_equals`` true or false (inline parts such
  as signature logos do not count);
- ``received.business_hours``: ``equals``/``not_equals`` true or false, with
  ``schedule: <name in sla.yaml>``;
- ``received.weekday``: ``equals``/``not_equals``/``in`` mon..sun, in the
  timezone of ``schedule`` when one is given, else UTC.

A text value may be a list ("any of these") or ``{file: lists/x.txt}``: one entry
per line, ``#`` starts a comment, resolved relative to rules.yaml.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailgate.domain import Priority, Status, check_kinds
from mailgate.rules.regex import Pattern, compile_pattern
from mailgate.sla import DAYS, Schedule

TEXT_FIELDS = (
    "sender",
    "sender_domain",
    "recipient",
    "subject",
    "body",
    "body_full",
    "help_topic",
    "attachment_name",
)
FLAG_FIELDS = ("has_attachment", "received.business_hours")
FIELDS_FIXED = (*TEXT_FIELDS, *FLAG_FIELDS, "received.weekday")
ADDRESS_FIELDS = ("sender", "sender_domain", "recipient")
OPERATORS = ("equals", "not_equals", "contains", "not_contains", "starts", "ends", "matches", "not_matches", "in")
Operator = Literal["equals", "not_equals", "contains", "not_contains", "starts", "ends", "matches", "not_matches", "in"]
_FLAGS = {"true": True, "yes": True, "false": False, "no": False}
_BOOL_HINT = "YAML reads yes/no/true/false/on/off as true or false: put text in quotes"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
STRATEGIES = ("round_robin", "least_loaded")


def _known_operator(value: Any) -> Any:
    """One clear message for a typo (``containz``) instead of pydantic's list of literals."""
    if isinstance(value, str) and value not in OPERATORS:
        raise ValueError(f"unknown operator '{value}' (use one of: {', '.join(OPERATORS)})")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListFile(_Strict):
    """``value: {file: lists/vip-domains.txt}``; the entries are read at load (``resolve.py``)."""

    file: str
    _path: Path | None = PrivateAttr(default=None)
    _entries: tuple[str, ...] | None = PrivateAttr(default=None)

    def loaded(self, path: Path, entries: tuple[str, ...]) -> ListFile:
        copy = self.model_copy()
        copy._path, copy._entries = path, entries
        return copy

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def entries(self) -> tuple[str, ...]:
        if self._entries is None:
            raise ValueError(f"list file {self.file!r} was not loaded (rules must come from load_config)")
        return self._entries


Value = str | bool | list[str] | ListFile


def _text(item: Any) -> str:
    if isinstance(item, bool):
        raise ValueError(f"value: {_BOOL_HINT}")
    if isinstance(item, str | int | float):
        return str(item)
    raise ValueError("value: a list may hold only text entries")


def _coerce_value(value: Any) -> Any:
    """Numbers are text (``X-Priority: 1``); a mapping must be a list file; say so in one sentence."""
    if isinstance(value, bool | str | ListFile):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return [_text(item) for item in value]
    if isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
        return value
    if value is None:
        raise ValueError('value is empty (write value: "" to compare with empty text)')
    raise ValueError("value must be text, a list of texts, true/false, or {file: <list file>}")


def _flag(value: Value, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _FLAGS:
        return _FLAGS[value.strip().lower()]
    raise ValueError(f"field '{field}' takes true or false")


def _weekdays(op: str, value: Value) -> None:
    days = [value] if isinstance(value, str) else value
    if not isinstance(days, list) or (op == "in") != isinstance(value, list):
        raise ValueError("received.weekday: 'in' takes a list of days, equals/not_equals one day (mon..sun)")
    bad = [d for d in days if d.strip().lower() not in DAYS]
    if bad:
        raise ValueError(f"unknown weekday {bad[0]!r} (use mon, tue, wed, thu, fri, sat, sun)")


class Condition(_Strict):
    field: str
    op: Annotated[Operator, BeforeValidator(_known_operator)]
    value: Annotated[Value, BeforeValidator(_coerce_value)]
    schedule: str | None = None
    _regex: Pattern | None = PrivateAttr(default=None)
    _flag: bool | None = PrivateAttr(default=None)
    _schedule: Schedule | None = PrivateAttr(default=None)

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value in FIELDS_FIXED or (value.startswith("header:") and len(value) > len("header:")):
            return value
        if value == "received":
            raise ValueError("unknown field 'received' (use received.business_hours or received.weekday)")
        raise ValueError(f"unknown field '{value}'")

    @field_validator("op")
    @classmethod
    def _fits_field(cls, op: str, info: ValidationInfo) -> str:
        field = info.data.get("field")
        if field in FLAG_FIELDS and op not in ("equals", "not_equals"):
            raise ValueError(f"field '{field}' takes only equals or not_equals, not '{op}'")
        if field == "received.weekday" and op not in ("equals", "not_equals", "in"):
            raise ValueError(f"field 'received.weekday' takes only equals, not_equals or in, not '{op}'")
        return op

    @field_validator("value")
    @classmethod
    def _fits_op(cls, value: Value, info: ValidationInfo) -> Value:
        """Checked here, not on the whole condition, so a problem points at the ``value:`` line."""
        field, op = info.data.get("field"), info.data.get("op")
        if field is None or op is None:
            return value  # already reported
        if field in FLAG_FIELDS:
            _flag(value, field)
        elif field == "received.weekday":
            _weekdays(op, value)
        elif isinstance(value, bool):
            raise ValueError(f"field '{field}' compares text: {_BOOL_HINT}")
        elif op == "in" and isinstance(value, str):
            raise ValueError("operator 'in' needs a list value or {file: <list file>}")
        elif op in ("matches", "not_matches"):
            if not isinstance(value, str):
                raise ValueError(f"operator '{op}' needs a string value")
            compile_pattern(value)
        return value

    @field_validator("schedule")
    @classmethod
    def _for_received(cls, schedule: str | None, info: ValidationInfo) -> str | None:
        field = info.data.get("field")
        if schedule is not None and field is not None and not field.startswith("received."):
            raise ValueError("'schedule' applies only to received.business_hours and received.weekday")
        return schedule

    @model_validator(mode="after")
    def _prepare(self) -> Condition:
        if self.field == "received.business_hours" and self.schedule is None:
            raise ValueError("received.business_hours needs 'schedule: <name of a schedule in sla.yaml>'")
        if self.field in FLAG_FIELDS:
            self._flag = _flag(self.value, self.field)
        elif self.op in ("matches", "not_matches") and isinstance(self.value, str):
            self._regex = compile_pattern(self.value)
        return self

    @property
    def regex(self) -> Pattern | None:
        return self._regex

    @property
    def flag(self) -> bool | None:
        return self._flag

    @property
    def bound_schedule(self) -> Schedule | None:
        return self._schedule

    def with_schedule(self, schedule: Schedule) -> Condition:
        copy = self.model_copy()
        copy._schedule = schedule
        return copy

    def texts(self) -> tuple[str, ...]:
        """The value as a tuple of texts (a list file's entries once loaded)."""
        value = self.value
        if isinstance(value, ListFile):
            return value.entries
        if isinstance(value, bool):
            return ()
        return (value,) if isinstance(value, str) else tuple(value)


def _node_kind(value: Any) -> str:
    """A mapping with ``field``/``op``/``value`` is a condition, anything else a group, so a typo
    inside a condition is reported once, as itself, and not also as "not a valid group"."""
    if isinstance(value, dict):
        return "condition" if value.keys() & {"field", "op", "value"} else "group"
    return "condition" if isinstance(value, Condition) else "group"


Node = Annotated[
    Annotated[Condition, Tag("condition")] | Annotated["When", Tag("group")],
    Discriminator(_node_kind),
]


class When(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    all: list[Node] = []
    any: list[Node] = []
    not_: Annotated[Node | None, Field(alias="not")] = None

    @property
    def empty(self) -> bool:
        return not (self.all or self.any or self.not_)


class Then(_Strict):
    help_topic: str | None = None
    department: str | None = None
    priority: Priority | None = None
    sla: str | None = None
    assignee: str | None = None  # an agent's address, round_robin:<team> or least_loaded:<team>
    team: str | None = None
    status: Status | None = None
    tags: list[str] = []
    collaborators: list[str] = []
    no_autoreply: bool = False
    reply: str | None = None  # canned reply: templates/<reply>.txt.j2
    reject: str | None = None  # polite bounce text
    discard: bool = False  # stored as discarded, never lost
    quarantine: str | None = None  # reason

    @field_validator("assignee")
    @classmethod
    def _assignee(cls, value: str | None) -> str | None:
        if value is None:
            return None
        strategy, sep, team = value.partition(":")
        if sep and strategy.strip() in STRATEGIES and team.strip():
            return f"{strategy.strip()}:{team.strip()}"
        if sep and strategy.strip() not in STRATEGIES and "@" not in value:
            raise ValueError(f"unknown assignment strategy '{strategy.strip()}' (use {' or '.join(STRATEGIES)})")
        if not _EMAIL.match(value.strip()):
            raise ValueError(
                f"assignee must be an agent's address, round_robin:<team> or least_loaded:<team>, not {value!r}"
            )
        return value.strip().lower()

    @field_validator("collaborators")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not _EMAIL.match(address.strip()):
                raise ValueError(f"not an email address: {address!r}")
        return [a.strip().lower() for a in value]

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        tags = [t.strip() for t in value]
        if not all(tags):
            raise ValueError("a tag may not be empty")
        return list(dict.fromkeys(tags))

    @field_validator("reply")
    @classmethod
    def _template_name(cls, value: str | None) -> str | None:
        if value is not None and not _TEMPLATE_NAME.match(value):
            raise ValueError(f"reply names a template (templates/<name>.txt.j2), not a path: {value!r}")
        return value

    @field_validator("reject", "quarantine")
    @classmethod
    def _says_why(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("give the text (reject: the bounce text; quarantine: the reason)")
        return value

    @model_validator(mode="after")
    def _one_fate(self) -> Then:
        fates = [name for name in ("reject", "discard", "quarantine") if getattr(self, name)]
        if len(fates) > 1:
            raise ValueError(f"a rule can do only one of reject, discard and quarantine (got {' and '.join(fates)})")
        return self

    def applied(self, rule: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Everything this action sets (a later setting wins, as when applied one by one) and its
        change lines, worked out once per rule: a mail matching 30 rules would format them all again."""
        cache = self.applied_by_rule
        if rule not in cache:
            fields: dict[str, Any] = {}
            lines = []
            for setting, change in self.settings:
                fields.update(setting)
                lines.append(f"rule {rule} {change}")
            if self.tags:
                lines.append(f"rule {rule} added tags {', '.join(self.tags)}")
            if self.collaborators:
                lines.append(f"rule {rule} added collaborators {', '.join(self.collaborators)}")
            cache[rule] = (fields, tuple(lines))
        return cache[rule]

    @cached_property
    def applied_by_rule(self) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
        return {}

    @cached_property
    def settings(self) -> tuple[tuple[dict[str, Any], str], ...]:
        """What this action sets on a RouteDecision, as (fields, change line), worked out once per rule;
        all but tags and collaborators, which add up across rules."""
        out: list[tuple[dict[str, Any], str]] = []
        for key, attr in (
            ("department", "department"),
            ("priority", "priority"),
            ("sla", "sla_plan"),
            ("team", "team"),
            ("status", "status"),
            ("reply", "canned_reply"),
        ):
            value = getattr(self, key)
            if value is not None:
                out.append(({attr: value}, f"set {key}={value}"))
        if self.agent is not None:
            out.append(
                ({"assignee": self.agent, "assign_strategy": None, "assign_team": None}, f"set assignee={self.agent}")
            )
        elif self.assign_strategy is not None:
            out.append(
                (
                    {"assignee": None, "assign_strategy": self.assign_strategy, "assign_team": self.assign_team},
                    f"set assignee={self.assignee}",
                )
            )
        if self.reject is not None:  # the mail's fate: the last matching rule that decides one wins
            out.append(
                ({"action": "reject", "reject": self.reject, "quarantine": None}, f"rejects the mail: {self.reject}")
            )
        elif self.discard:
            out.append(
                ({"action": "discard", "reject": None, "quarantine": None}, "discards the mail (stored, no ticket)")
            )
        elif self.quarantine is not None:
            fate = {"action": "quarantine", "reject": None, "quarantine": self.quarantine}
            out.append((fate, f"quarantines the mail: {self.quarantine}"))
        return tuple(out)

    @property
    def assign_strategy(self) -> Literal["round_robin", "least_loaded"] | None:
        strategy = self.assignee.partition(":")[0] if self.assignee and ":" in self.assignee else None
        return "round_robin" if strategy == "round_robin" else "least_loaded" if strategy == "least_loaded" else None

    @property
    def assign_team(self) -> str | None:
        return self.assignee.partition(":")[2] if self.assignee and self.assign_strategy else None

    @property
    def agent(self) -> str | None:
        return None if self.assign_strategy or self.assignee is None else self.assignee


class Rule(_Strict):
    name: str
    when: When = When()
    then: Then = Then()
    stop: bool = False


class Recognise(_Strict):
    addresses: list[str] = []
    plus: str | None = None
    subject: str | None = None
    _subject: Pattern | None = PrivateAttr(default=None)

    @field_validator("addresses")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [a.strip().lower() for a in value]

    @model_validator(mode="after")
    def _regex(self) -> Recognise:
        if self.subject is not None:
            self._subject = compile_pattern(self.subject)
        return self

    @property
    def subject_pattern(self) -> Pattern | None:
        return self._subject


class HelpTopic(_Strict):
    name: str
    recognise: Recognise = Recognise()
    department: str | None = None
    priority: Priority = Priority.NORMAL
    sla: str | None = None
    auto_ack: bool = True
    ack_template: str = "ack_new"
    notifications: Annotated[
        dict[str, bool], AfterValidator(check_kinds)
    ] = {}  # per-kind switches (most specific wins)

    @field_validator("ack_template")
    @classmethod
    def _template_name(cls, value: str) -> str:
        if not _TEMPLATE_NAME.match(value):
            raise ValueError(f"ack_template names a template (templates/<name>.txt.j2), not a path: {value!r}")
        return value


def conditions(when: When | Condition, loc: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], Condition]]:
    """Every condition in a ``when`` tree with its location in the file, in file order."""
    if isinstance(when, Condition):
        return [(loc, when)]
    out: list[tuple[tuple[str | int, ...], Condition]] = []
    for key, nodes in (("all", when.all), ("any", when.any)):
        for i, node in enumerate(nodes):
            out += conditions(node, (*loc, key, i))
    if when.not_ is not None:
        out += conditions(when.not_, (*loc, "not"))
    return out


class RulesFile(_Strict):
    help_topics: list[HelpTopic] = []
    default_help_topic: str | None = None
    rules: list[Rule] = []

    @model_validator(mode="before")
    @classmethod
    def _none_lists(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: ([] if v is None and k in ("help_topics", "rules") else v) for k, v in data.items()}
        return data

    def list_files(self) -> list[Path]:
        """The list files the rules read (resolved at load), so a watcher can reload when one changes."""
        paths = []
        for rule in self.rules:
            for _, cond in conditions(rule.when, ()):
                if isinstance(cond.value, ListFile) and cond.value.path is not None:
                    paths.append(cond.value.path)
        return list(dict.fromkeys(paths))
