"""Help topics and routing rules as admins write them in rules.yaml, validated at load.

Regexes are compiled here (RE2, see ``regex.py``), once, so a bad pattern is a
load-time error with file:line and never a surprise while mail is flowing.
What a rule names in other files (list files, schedules, agents, templates) is
checked and bound by ``resolve.py`` and ``mailgate.config`` at load, too. The
conditions a rule's ``when`` is made of are in ``conditions.py``.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from mailgate.domain import Priority, Status, check_kinds
from mailgate.rules.conditions import Condition, ListFile, _Strict
from mailgate.rules.regex import Pattern, compile_pattern
from mailgate.rules.retention import Retention

_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
STRATEGIES = ("round_robin", "least_loaded")


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
    ack_forwarded: bool = False  # acknowledge mail an agent forwards in (else only when they write #ack)
    ack_template: str = "ack_new"
    from_name: str | None = None  # the display name of every mail about its tickets ("Billing team")
    notifications: Annotated[
        dict[str, bool], AfterValidator(check_kinds)
    ] = {}  # per-kind switches (most specific wins)
    retention: Retention = Retention()  # over mailgate.yaml's retention, key by key (jobs/retention.py)

    @field_validator("from_name")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or len(value) > 100 or any(c in value for c in "\r\n<>")):
            raise ValueError(f"from_name is a display name of 1-100 characters without line breaks or <>: {value!r}")
        return value

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
