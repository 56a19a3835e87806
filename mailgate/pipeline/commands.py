"""Stage 7: agent commands on the lines at the top of a mail (``#status resolved``, ``#assign me``). (pure)

Zendesk's and RT CommandByMail's grammar: one command per line, only at the
top, parsing stops at the first line that is not a command. A command that
is unknown or has a bad argument is reported back to the agent and nothing
of that mail's commands is applied, so a typo never half-changes a ticket.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailgate.domain import Command, Priority, Status

_LINE = re.compile(r"^#([a-z_]+)(?:[ \t:]+(.*?))?\s*$", re.I)
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")  # a ticket number as stored; whether it exists is links.py's
ALONE = ("merge", "split")  # each acts on two tickets: no other command may share its mail
STATUSES = ("open", *(s.value for s in Status if s is not Status.OPEN))


@dataclass(frozen=True)
class Vocabulary:
    """What arguments may name: agents (address -> name), departments, help topics, SLA plans."""

    agents: dict[str, str] = field(default_factory=dict)
    departments: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()
    plans: frozenset[str] = frozenset()

    def agent(self, value: str, sender: str) -> str | None:
        wanted = value.strip().lower()
        if wanted == "me":
            return sender if sender in self.agents else None
        if wanted in self.agents:
            return wanted
        by_name = [a for a, n in self.agents.items() if n.lower() == wanted or a.split("@")[0] == wanted]
        return by_name[0] if len(by_name) == 1 else None


@dataclass(frozen=True)
class AgentMail:
    commands: tuple[Command, ...]
    errors: tuple[str, ...]
    text: str  # the mail's new text without the command lines: what a customer may see
    note: bool  # "#note": the whole mail is an internal note


def _named(value: str, names: Iterable[str]) -> str | None:
    return next((n for n in names if n.lower() == value.strip().lower()), None)


def _check(name: str, arg: str, vocab: Vocabulary, sender: str) -> tuple[Command | None, str | None]:
    if name == "note":
        return Command("note", ""), None
    if name == "split":  # the message to split off is the one the mail answers, never named
        return (Command("split", ""), None) if not arg else (None, f"#split {arg}: #split takes no argument; "
                                                              "reply with it to the alert of the message to split off")
    if not arg:
        return None, f"#{name} needs an argument"
    checks = {
        "status": lambda: arg.lower() if arg.lower() in STATUSES else None,
        "priority": lambda: arg.lower() if arg.lower() in [p.value for p in Priority] else None,
        "assign": lambda: "none" if arg.lower() == "none" else vocab.agent(arg, sender),
        "dept": lambda: _named(arg, vocab.departments),
        "topic": lambda: _named(arg, vocab.topics),
        "sla": lambda: _named(arg, vocab.plans),
        "cc": lambda: arg.strip("<> ").lower() if _EMAIL.match(arg.strip("<> ")) else None,
        "uncc": lambda: arg.strip("<> ").lower() if _EMAIL.match(arg.strip("<> ")) else None,
        "merge": lambda: arg.strip("[]# ") if _NUMBER.match(arg.strip("[]# ")) else None,
    }
    if name not in checks:
        return None, f"unknown command #{name} (known: #{', #'.join([*checks, 'split', 'note'])})"
    value = checks[name]()
    if value is None:
        return None, f"#{name} {arg}: not a valid {name} argument"
    return Command(name, value), None


def parse_agent_mail(text: str, vocab: Vocabulary, sender: str) -> AgentMail:
    lines = text.splitlines()
    commands: list[Command] = []
    errors: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if not line:
            index += 1
            continue
        m = _LINE.match(line)
        if m is None:
            break
        command, error = _check(m.group(1).lower(), (m.group(2) or "").strip(), vocab, sender)
        if command is not None:
            commands.append(command)
        if error is not None:
            errors.append(error)
        index += 1
    rest = "\n".join(lines[index:]).strip()
    note = any(c.name == "note" for c in commands)
    alone = [c.name for c in commands if c.name in ALONE]
    if alone and len([c for c in commands if c.name != "note"]) > 1:
        errors.append(f"#{alone[0]} goes alone: send other commands in a mail of their own")
    return AgentMail(tuple(c for c in commands if c.name != "note"), tuple(errors), rest, note)
