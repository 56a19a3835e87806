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


def _walk(node: yaml.Node, loc: Loc, out: dict[Loc, int], duplicates: list[tuple[int, str]]) -> None:
    out.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            if key in seen:  # PyYAML silently keeps the last one; an admin would lose half a rule
                duplicates.append((key_node.start_mark.line + 1, key))
            seen.add(key)
            out[(*loc, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*loc, key), out, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), out, duplicates)


def load_yaml(path: Path) -> YamlDoc:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}:1: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}:1: cannot read: {exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{path}:{line}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}:1: YAML error: {exc}") from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    duplicates: list[tuple[int, str]] = []
    if node is not None:
        _walk(node, (), lines, duplicates)
    raise_if(f"{path}:{line}: duplicate key '{key}'" for line, key in duplicates)
    return YamlDoc(path=path, data={} if data is None else data, lines=lines)


def _clean_loc(doc: YamlDoc, base: Loc, err: Any) -> Loc:
    """pydantic's error location without what is not a key in the file: validator names and the
    branch names of unions (``condition``, ``str``, ``list[str]``), so the message names the field."""
    raw = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    out: list[str | int] = []
    for i, part in enumerate(raw):
        named_by_error = i == len(raw) - 1 and err["type"] in ("missing", "extra_forbidden")
        if named_by_error or (*base, *out, part) in doc.lines:
            out.append(part)
    return tuple(out)


def _describe(loc: Loc, err: Any) -> str:
    """One admin-readable message per pydantic error."""
    kind = err["type"]
    field = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        return f"unknown field '{field}'"
    if kind == "missing":
        return f"missing field '{field}'"
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("value_error", "assertion_error"):
        return msg  # our own validators write whole sentences
    name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    return f"{name}: {msg}" if name else msg


def _merge(messages: list[str]) -> str:
    """The branches of a union fail together ("a valid string", "a valid list"): say it once."""
    if len(messages) == 1:
        return messages[0]
    head, sep, _ = messages[0].partition("Input should be ")
    if sep and all(m.startswith(head + sep) for m in messages):
        return head + sep + " or ".join(m[len(head + sep) :] for m in messages)
    return "; ".join(messages)


def validation_problems(doc: YamlDoc, exc: ValidationError, base: Loc = ()) -> list[str]:
    by_loc: dict[Loc, list[str]] = {}
    for err in exc.errors():
        loc = _clean_loc(doc, base, err)
        message = _describe(loc, err)
        if message not in by_loc.setdefault(loc, []):
            by_loc[loc].append(message)
    return [f"{doc.where((*base, *loc))}: {_merge(messages)}" for loc, messages in by_loc.items()]


def raise_if(problems: Iterable[str]) -> None:
    collected = list(problems)
    if collected:
        raise ConfigError(collected)
