"""Checks across mailgate.yaml and the files it names: every reference must resolve, reported as file:line.

Split from ``config.py``, which holds the models; ``load_config`` runs these checks after the
models validated, so an admin sees every problem of every file at once.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from mailgate.config.models import Config
from mailgate.hours import ScheduleError, parse_schedule
from mailgate.rules.conditions import ListFile
from mailgate.rules.resolve import Binder
from mailgate.rules.schema import HelpTopic, Rule, RulesFile, Then, conditions
from mailgate.yamlfile import YamlDoc

_WHERE = re.compile(r"^(.*?):(\d+): ")


def in_file_order(problems: list[str]) -> list[str]:
    """Each file's problems by line; files in the order they were first reported."""
    files: dict[str, int] = {}
    keyed = []
    for problem in dict.fromkeys(problems):
        m = _WHERE.match(problem)
        file, line = (m.group(1), int(m.group(2))) if m else ("", 0)
        keyed.append((files.setdefault(file, len(files)), line, problem))
    return [problem for _, _, problem in sorted(keyed, key=lambda k: k[:2])]


def partial_rules(doc: YamlDoc) -> tuple[RulesFile, dict[str, list[int]]]:
    """The help topics and rules of a broken rules.yaml that are valid on their own, with their positions."""
    data = doc.data if isinstance(doc.data, dict) else {}

    def valid(key: str, model: type[_M]) -> tuple[list[_M], list[int]]:
        items = data.get(key)
        good: list[tuple[int, _M]] = []
        for i, item in enumerate(items if isinstance(items, list) else []):
            try:
                good.append((i, model.model_validate(item)))
            except ValidationError:
                continue
        return [m for _, m in good], [i for i, _ in good]

    topics, topic_at = valid("help_topics", HelpTopic)
    rules, rule_at = valid("rules", Rule)
    default = data.get("default_help_topic")
    partial = RulesFile(
        help_topics=topics, default_help_topic=default if isinstance(default, str) else None, rules=rules
    )
    return partial, {"help_topics": topic_at, "rules": rule_at}


_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


class CrossCheck:
    """References between files must resolve, or routing would fail on live mail.

    Also binds what rules name in other files (list files, schedules), so the
    rules the daemon evaluates never touch the disk: ``bound_rules``.
    """

    def __init__(
        self, config: Config, docs: dict[str, YamlDoc | None], positions: dict[str, list[int]] | None = None
    ) -> None:
        self.config, self.docs = config, docs
        self.positions = positions or {}  # where each checked topic/rule stands in the file, when some were left out
        self.problems: list[str] = []
        self.topics = {t.name for t in config.rules.help_topics}
        if positions is not None:  # a topic with errors of its own still exists: no "unknown topic" for it
            self.topics |= {name for _, name in self.raw_names("help_topics")}
        self.departments = {d.name for d in config.agents.departments}
        self.agents = {a.email for a in config.agents.agents}
        self.teams = {t.name for t in config.agents.teams}
        self.plans = set(config.sla.sla_plans)
        self.bound_rules = config.rules

    def need(self, ok: bool, file: str, loc: tuple[str | int, ...], msg: str) -> None:
        if not ok:
            self.problems.append(f"{self.where(file, loc)}: {msg}")

    def where(self, file: str, loc: tuple[str | int, ...]) -> str:
        doc = self.docs.get(file)
        return doc.where(loc) if doc else f"{self.config.path}:1"

    def template(self, name: str, loc: tuple[str | int, ...]) -> None:
        folder = self.config.main.templates
        if folder is not None:  # without a .subject.j2 of its own it takes the acknowledgment's subject
            self.need(
                (folder / f"{name}.txt.j2").is_file(),
                "rules",
                loc,
                f"unknown template '{name}' (no {folder / (name + '.txt.j2')})",
            )

    def numbered(self, key: str, items: list[_T]) -> list[tuple[int, _T]]:
        return list(zip(self.positions.get(key, range(len(items))), items, strict=True))

    def run(self) -> list[str]:
        self.topics_and_mailboxes()
        self.rules()
        self.agents_and_plans()
        return self.problems

    def topics_and_mailboxes(self) -> None:
        r = self.config.rules
        if r.default_help_topic is not None:
            self.need(
                r.default_help_topic in self.topics,
                "rules",
                ("default_help_topic",),
                f"unknown help topic '{r.default_help_topic}'",
            )
        seen: set[str] = set()
        for i, topic in self.numbered("help_topics", r.help_topics):
            self.need(
                topic.name not in seen,
                "rules",
                ("help_topics", i, "name"),
                f"duplicate help topic '{topic.name}'",
            )
            seen.add(topic.name)
            if topic.department:
                self.need(
                    topic.department in self.departments,
                    "rules",
                    ("help_topics", i, "department"),
                    f"unknown department '{topic.department}'",
                )
            if topic.sla:
                self.need(
                    topic.sla in self.plans,
                    "rules",
                    ("help_topics", i, "sla"),
                    f"unknown SLA plan '{topic.sla}'",
                )
            self.template(topic.ack_template, ("help_topics", i, "ack_template"))
        spam_topic = self.config.main.intake.spam.topic
        if spam_topic is not None:
            where = ("intake", "spam", "action")
            self.need(spam_topic in self.topics, "main", where, f"unknown help topic '{spam_topic}'")
        http = self.config.main.http
        if http is not None and http.form.help_topic is not None:
            self.need(http.form.help_topic in self.topics, "main", ("http", "form", "help_topic"),
                      f"unknown help topic '{http.form.help_topic}'")
        agents = {a.email for a in self.config.agents.agents}
        for i, key in enumerate(http.api_keys if http is not None else []):
            if key.agent is not None:
                self.need(key.agent in agents, "main", ("http", "api_keys", i, "agent"),
                          f"{key.agent} is not an agent in agents.yaml")
        for i, mb in enumerate(self.config.main.intake.imap):
            if mb.help_topic:
                self.need(
                    mb.help_topic in self.topics,
                    "main",
                    ("intake", "imap", i, "help_topic"),
                    f"unknown help topic '{mb.help_topic}'",
                )

    def rules(self) -> None:
        rules_path = self.config.main.rules
        base = rules_path.parent if rules_path is not None else self.config.path.parent
        binder = Binder(
            base, self.config.sla.schedules, lambda loc: self.where("rules", loc), lambda loc: self.where("sla", loc)
        )
        self.rule_names()
        catch_all: str | None = None
        bound = []
        for i, rule in self.numbered("rules", self.config.rules.rules):
            if catch_all is not None:
                self.need(
                    False,
                    "rules",
                    ("rules", i, "name"),
                    f"rule '{rule.name}' is unreachable: '{catch_all}' matches every mail and stops",
                )
            if rule.stop and rule.when.empty and catch_all is None:
                catch_all = rule.name
            bound.append(binder.rule(i, rule))
            self.problems.extend(p for p in binder.problems if p not in self.problems)
            self.rule_conditions(i, rule)
            self.rule_actions(i, rule.then)
        self.bound_rules = self.config.rules.model_copy(update={"rules": bound})

    def raw_names(self, key: str) -> list[tuple[int, str]]:
        """``name`` of each help topic or rule as written in rules.yaml, valid or not."""
        doc = self.docs.get("rules")
        raw = doc.data.get(key) if doc is not None and isinstance(doc.data, dict) else None
        items = [(i, r) for i, r in enumerate(raw if isinstance(raw, list) else []) if isinstance(r, dict)]
        return [(i, r["name"]) for i, r in items if isinstance(r.get("name"), str)]

    def rule_names(self) -> None:
        """From the file as written, so a rule that has other errors still counts as a duplicate."""
        named = self.raw_names("rules") if self.docs.get("rules") is not None else []
        names: set[str] = set()
        for i, name in named:
            self.need(name not in names, "rules", ("rules", i, "name"), f"duplicate rule name '{name}'")
            names.add(name)

    def rule_conditions(self, i: int, rule: Rule) -> None:
        """A help_topic condition compared with a name that is no topic can never be what the admin meant."""
        known = {unicodedata.normalize("NFKC", t).casefold() for t in self.topics}
        for loc, cond in conditions(rule.when, ("rules", i, "when")):
            if cond.field == "help_topic" and cond.op in ("equals", "not_equals", "in"):
                for name in cond.texts() if not isinstance(cond.value, ListFile) else ():
                    self.need(
                        unicodedata.normalize("NFKC", name).casefold() in known,
                        "rules",
                        (*loc, "value"),
                        f"unknown help topic '{name}'",
                    )

    def rule_actions(self, i: int, then: Then) -> None:
        loc: tuple[str | int, ...] = ("rules", i, "then")
        refs: list[tuple[str, str | None, set[str], str]] = [
            ("help_topic", then.help_topic, self.topics, "help topic"),
            ("department", then.department, self.departments, "department"),
            ("sla", then.sla, self.plans, "SLA plan"),
            ("assignee", then.agent, self.agents, "agent"),
            ("assignee", then.assign_team, self.teams, "team"),
            ("team", then.team, self.teams, "team"),
        ]
        for key, value, known, label in refs:
            if value is not None:
                self.need(value in known, "rules", (*loc, key), f"unknown {label} '{value}'")
        if then.reply is not None:
            self.template(then.reply, (*loc, "reply"))

    def agents_and_plans(self) -> None:
        for i, dept in enumerate(self.config.agents.departments):
            if dept.manager is not None:
                self.need(
                    dept.manager in self.agents,
                    "agents",
                    ("departments", i, "manager"),
                    f"unknown agent '{dept.manager}'",
                )
            for j, member in enumerate(dept.members):
                self.need(
                    member in self.agents,
                    "agents",
                    ("departments", i, "members", j),
                    f"unknown agent '{member}'",
                )
        for i, team in enumerate(self.config.agents.teams):
            for j, member in enumerate(team.members):
                self.need(member in self.agents, "agents", ("teams", i, "members", j), f"unknown agent '{member}'")
        for name, spec in self.config.sla.schedules.items():  # also those no rule uses (the binder did those)
            try:
                parse_schedule(spec)
            except ValueError as exc:
                at = exc.at if isinstance(exc, ScheduleError) else ()
                problem = f"{self.where('sla', ('schedules', name, *at))}: schedule '{name}': {exc}"
                self.problems += [] if problem in self.problems else [problem]
        for name, plan in self.config.sla.sla_plans.items():
            if plan.schedule != "24x7":
                self.need(
                    plan.schedule in self.config.sla.schedules,
                    "sla",
                    ("sla_plans", name, "schedule"),
                    f"unknown schedule '{plan.schedule}'",
                )
            for i, rung in enumerate(plan.escalations):
                if rung.assign is not None:
                    self.need(
                        rung.assign in self.agents,
                        "sla",
                        ("sla_plans", name, "escalations", i, "assign"),
                        f"unknown agent '{rung.assign}'",
                    )


def cross_check(config: Config, docs: dict[str, YamlDoc | None]) -> list[str]:
    return CrossCheck(config, docs).run()
