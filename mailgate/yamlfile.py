"""YAML loading that remembers where each value stood, so every config error names file:line.

Admins edit these files by hand; "config/rules.yaml:14: unknown operator" is
the difference between a two-second fix and a search. PyYAML's composer
keeps node marks, so one extra compose pass gives us a path -> line map.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mailgate.errors import ConfigError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDoc:
    path: Path
    data: Any
    lines: dict[Loc, int]

    def line(self, loc: Sequence[str | int]) -> int:
        """Line of the deepest known prefix of ``loc`` (1-based)."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)

    def where(self, loc: Sequence[str | int]) -> str:
        return f"{self.path}:{self.line(loc)}"


def _walk(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            out[(*loc, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*loc, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), out)


def load_yaml(path: Path) -> YamlDoc:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}:1: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}:1: cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{path}:{line}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}:1: YAML error: {exc}") from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return YamlDoc(path=path, data={} if data is None else data, lines=lines)


def _describe(err: Any) -> tuple[Loc, str]:
    loc: Loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    kind = err["type"]
    field = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        return loc, f"unknown field '{field}'"
    if kind == "missing":
        return loc, f"missing field '{field}'"
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    dotted = ".".join(str(p) for p in loc)
    return loc, f"{dotted}: {msg}" if dotted else msg


def validation_problems(doc: YamlDoc, exc: ValidationError, base: Loc = ()) -> list[str]:
    problems = []
    for err in exc.errors():
        loc, message = _describe(err)
        problems.append(f"{doc.where((*base, *loc))}: {message}")
    return problems


def raise_if(problems: Iterable[str]) -> None:
    collected = list(problems)
    if collected:
        raise ConfigError(collected)
