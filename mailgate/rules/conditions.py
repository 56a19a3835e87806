"""One rule condition as admins write it in rules.yaml: a field, an operator and a value, checked at load.

Condition fields:

- text: ``sender``, ``sender_domain``, ``recipient`` (To, Cc and the envelope),
  ``subject``, ``body`` (the new text of a reply), ``body_full`` (with the quoted
  history), ``help_topic``, ``attachment_name``, ``header:<Name>``;
- ``has_attachment``: ``equals``/``not_equals`` true or false (inline parts such
  as signature logos do not count);
- ``received.business_hours``: ``equals``/``not_equals`` true or false, with
  ``schedule: <name in sla.yaml>``;
- ``received.weekday``: ``equals``/``not_equals``/``in`` mon..sun, in the
  timezone of ``schedule`` when one is given, else UTC;
- the verdict of a trusted relay (``pipeline/mtaverdict.py``): ``spam``
  (``equals``/``not_equals`` true or false), ``spam_score`` (``above``,
  ``below``, ``at_least``, ``at_most`` a number; holds for no mail without a
  trusted score) and ``dmarc`` (text: pass, fail, none, ... or unknown when no
  trusted result).

A text value may be a list ("any of these") or ``{file: lists/x.txt}``: one entry
per line, ``#`` starts a comment, resolved relative to rules.yaml.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailgate.hours import DAYS, Schedule
from mailgate.rules.regex import Pattern, compile_pattern

TEXT_FIELDS = (
    "sender",
    "sender_domain",
    "recipient",
    "subject",
    "body",
    "body_full",
    "help_topic",
    "attachment_name",
    "dmarc",
    "channel",  # email, api, form, or the staff channel of tickets open (phone, in_person, ...)
)
FLAG_FIELDS = ("has_attachment", "received.business_hours", "spam")
NUMBER_FIELDS = ("spam_score",)
FIELDS_FIXED = (*TEXT_FIELDS, *FLAG_FIELDS, *NUMBER_FIELDS, "received.weekday")
ADDRESS_FIELDS = ("sender", "sender_domain", "recipient")
NUMBER_OPERATORS = ("above", "below", "at_least", "at_most")
OPERATORS = (
    "equals", "not_equals", "contains", "not_contains", "starts", "ends", "matches", "not_matches", "in",
    *NUMBER_OPERATORS,
)
Operator = Literal[
    "equals", "not_equals", "contains", "not_contains", "starts", "ends", "matches", "not_matches", "in",
    "above", "below", "at_least", "at_most",
]
_FLAGS = {"true": True, "yes": True, "false": False, "no": False}
_BOOL_HINT = "YAML reads yes/no/true/false/on/off as true or false: put text in quotes"


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


def _number(value: Value, field: str) -> float:
    try:
        if isinstance(value, str) and math.isfinite(number := float(value)):
            return number
    except ValueError:
        pass
    raise ValueError(f"field '{field}' compares with a number, e.g. 5 or 7.5, not {value!r}")


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
    _number: float | None = PrivateAttr(default=None)

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
        if (field in NUMBER_FIELDS) != (op in NUMBER_OPERATORS) and field is not None:
            if field in NUMBER_FIELDS:
                raise ValueError(f"field '{field}' is a number: use {', '.join(NUMBER_OPERATORS)}, not '{op}'")
            raise ValueError(f"operator '{op}' compares numbers: only {', '.join(NUMBER_FIELDS)} takes it")
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
        elif field in NUMBER_FIELDS:
            _number(value, field)
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
        elif self.field in NUMBER_FIELDS:
            self._number = _number(self.value, self.field)
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
    def number(self) -> float | None:
        return self._number

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


