"""SLA plans over business hours: a plan's targets, its escalation ladder and each step's due time.

Pure functions of a plan (``config``) and a schedule (``hours``); ``sla.timers`` stores what they
compute and ``jobs.sla_sweep`` fires it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mailgate.config import Escalation, SlaPlan
from mailgate.hours import ALWAYS, Schedule, add_business_time, parse_schedule

TARGETS = ("first_response", "resolution")


@dataclass(frozen=True)
class Due:
    """One step of a ladder: ``step`` percent of ``target`` is reached at ``due_at``."""

    target: str
    step: int
    due_at: datetime


def plan_schedule(plan: SlaPlan, schedules: Mapping[str, dict[str, Any]]) -> Schedule:
    return ALWAYS if plan.schedule == "24x7" else parse_schedule(schedules[plan.schedule])


def plan_targets(plan: SlaPlan, priority: str) -> dict[str, timedelta]:
    """The plan's targets, a per-priority override winning over the plan's own."""
    override = plan.priorities.get(priority)  # type: ignore[call-overload]
    out: dict[str, timedelta] = {}
    for target in TARGETS:
        value = getattr(override, target, None) if override else None
        value = value if value is not None else getattr(plan, target)
        if value is not None:
            out[target] = value
    return out


def ladder(plan: SlaPlan, target: str) -> dict[int, Escalation | None]:
    """Percent -> the escalation at that step; 100 % (the breach) is always a step."""
    steps: dict[int, Escalation | None] = {100: None}
    for rung in plan.escalations:
        if rung.of in (None, target):
            steps[rung.at] = rung
    return dict(sorted(steps.items()))


def dues(
    schedule: Schedule, running_since: datetime, consumed: timedelta, targets: Mapping[str, timedelta], plan: SlaPlan
) -> list[Due]:
    """Every ladder step of the running targets, given the business time already consumed."""
    out: list[Due] = []
    for target, duration in targets.items():
        for step in ladder(plan, target):
            need = duration * step / 100 - consumed
            at = add_business_time(schedule, running_since, need) if need > timedelta(0) else running_since
            out.append(Due(target, step, at.astimezone(UTC)))
    return out
