"""Help topics and routing rules as admins write them in rules.yaml, validated at load.

Regexes are compiled here, once, so a bad pattern is a load-time error with
file:line and never a surprise while mail is flowing.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from mailgate.domain import Priority

FIELDS_FIXED = ("sender", "sender_domain", "recipient", "subject", "body", "body_full", "help_topic")
OPERATORS = ("equals", "not_equals", "contains", "not_contains", "starts", "ends", "matches", "not_matches", "in")
Operator = Literal["equals", "not_equals", "contains", "not_contains", "starts", "ends", "matches", "not_matches", "in"]


def _known_operator(value: Any) -> Any:
    """One clear message for a typo (``containz``) instead of pydantic's list of literals."""
    if isinstance(value, str) and value not in OPERATORS:
        raise ValueError(f"unknown operator '{value}' (use one of: {', '.join(OPERATORS)})")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


class Recognise(_Strict):
    addresses: list[str] = []
    plus: str | None = None
    subject: str | None = None

    @field_validator("addresses")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [a.strip().lower() for a in value]

    @field_validator("subject")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value


class HelpTopic(_Strict):
    name: str
    recognise: Recognise = Recognise()
    department: str | None = None
    priority: Priority = Priority.NORMAL
    sla: str | None = None
    auto_ack: bool = True
    ack_template: str = "ack_new"


class Condition(_Strict):
    field: str
    op: Annotated[Operator, BeforeValidator(_known_operator)]
    value: str | list[str]

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value in FIELDS_FIXED or (value.startswith("header:") and len(value) > len("header:")):
            return value
        raise ValueError(f"unknown field '{value}'")

    @model_validator(mode="after")
    def _check_value(self) -> Condition:
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("operator 'in' needs a list value")
        if self.op in ("matches", "not_matches"):
            if not isinstance(self.value, str):
                raise ValueError(f"operator '{self.op}' needs a string value")
            _compile(self.value)
        return self


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
    all: list[Node] = []
    any: list[Node] = []
    not_: Annotated[Node | None, Field(alias="not")] = None


class Then(_Strict):
    help_topic: str | None = None
    department: str | None = None
    priority: Priority | None = None
    sla: str | None = None
    assignee: str | None = None
    reject: str | None = None
    no_autoreply: bool = False


class Rule(_Strict):
    name: str
    when: When = When()
    then: Then = Then()
    stop: bool = False


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
