"""Bind what rules.yaml names in other files: list files (read now) and schedules (parsed now).

Done once at load, so evaluation never touches the disk and a missing file or a
broken schedule is a ``file:line`` problem before any mail is routed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mailgate.hours import ALWAYS, Schedule, ScheduleError, parse_schedule
from mailgate.rules.conditions import ADDRESS_FIELDS, Condition, ListFile
from mailgate.rules.schema import Rule, RulesFile, When
from mailgate.yamlfile import Loc

Where = Callable[[Loc], str]
_COMMENT = re.compile(r"\s#")


def read_list(path: Path) -> tuple[list[tuple[int, str]], list[str]]:
    """``(line, entry)`` pairs: one entry per line, blank lines skipped, ``#`` starts a comment."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [f"{path}:1: cannot read list file: {exc.strerror or exc}"]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[: exc.start].count(b"\n") + 1
        return [], [f"{path}:{bad}: list file is not UTF-8 text"]
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = "" if line.lstrip().startswith("#") else _COMMENT.split(line, maxsplit=1)[0].strip()
        if entry:
            entries.append((number, entry))
    return entries, []


def _entry_problem(field: str, entry: str) -> str | None:
    if field not in ADDRESS_FIELDS:
        return None
    if any(c.isspace() for c in entry):
        return f"'{entry}' is not one address or domain (one entry per line)"
    if field == "sender_domain" and "@" in entry:
        return f"'{entry}' is an address; sender_domain compares domains"
    return None


class Binder:
    """Binds one rule at a time (``rule``), collecting problems in file order."""

    def __init__(self, base: Path, schedules: Mapping[str, Any], where: Where, sla_where: Where) -> None:
        self.base, self.schedules, self.where, self.sla_where = base, schedules, where, sla_where
        self.problems: list[str] = []
        self._lists: dict[Path, list[tuple[int, str]] | None] = {}
        self._parsed: dict[str, Schedule | None] = {"24x7": ALWAYS}

    def _problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def list_file(self, loc: Loc, cond: Condition, ref: ListFile) -> Condition:
        path = Path(ref.file).expanduser()
        path = path if path.is_absolute() else (self.base / path).resolve()
        if path not in self._lists:
            if not path.is_file():
                self._problem(f"{self.where((*loc, 'value'))}: list file '{ref.file}' not found")
                self._lists[path] = None
            else:
                entries, problems = read_list(path)
                self.problems += problems
                self._lists[path] = None if problems else entries
        lines = self._lists[path]
        if lines is None:
            return cond
        for number, entry in lines:
            bad = _entry_problem(cond.field, entry)
            if bad:
                self._problem(f"{path}:{number}: {bad}")
        return cond.model_copy(update={"value": ref.loaded(path, tuple(e for _, e in lines))})

    def schedule(self, loc: Loc, cond: Condition, name: str) -> Condition:
        if name not in self._parsed:
            spec = self.schedules.get(name)
            if spec is None:
                self._problem(f"{self.where((*loc, 'schedule'))}: unknown schedule '{name}'")
                self._parsed[name] = None
            else:
                try:
                    self._parsed[name] = parse_schedule(dict(spec))
                except (ValueError, TypeError) as exc:
                    at = exc.at if isinstance(exc, ScheduleError) else ()
                    self._problem(f"{self.sla_where(('schedules', name, *at))}: schedule '{name}': {exc}")
                    self._parsed[name] = None
        parsed = self._parsed[name]
        return cond if parsed is None else cond.with_schedule(parsed)

    def condition(self, loc: Loc, cond: Condition) -> Condition:
        if isinstance(cond.value, ListFile):
            cond = self.list_file(loc, cond, cond.value)
        if cond.schedule is not None:
            cond = self.schedule(loc, cond, cond.schedule)
        return cond

    def when(self, loc: Loc, node: When | Condition) -> Any:
        if isinstance(node, Condition):
            return self.condition(loc, node)
        return node.model_copy(
            update={
                "all": [self.when((*loc, "all", i), n) for i, n in enumerate(node.all)],
                "any": [self.when((*loc, "any", i), n) for i, n in enumerate(node.any)],
                "not_": None if node.not_ is None else self.when((*loc, "not"), node.not_),
            }
        )

    def rule(self, index: int, rule: Rule) -> Rule:
        return rule.model_copy(update={"when": self.when(("rules", index, "when"), rule.when)})


def resolve(
    rules: RulesFile, base: Path, schedules: Mapping[str, Any], where: Where, sla_where: Where
) -> tuple[RulesFile, list[str]]:
    """Rules with list files read and schedules parsed; problems as ``file:line: message``.

    ``base`` is rules.yaml's folder; ``where``/``sla_where`` turn a location in
    rules.yaml/sla.yaml into ``file:line``.
    """
    binder = Binder(base, schedules, where, sla_where)
    bound = [binder.rule(i, rule) for i, rule in enumerate(rules.rules)]
    return rules.model_copy(update={"rules": bound}), binder.problems
