"""agents.yaml (agents, departments, teams) and sla.yaml (schedules, plans, escalation ladders) as models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    field_validator,
)

from mailgate.config.fields import Duration, Email, _email, _Strict
from mailgate.domain import check_kinds


class Agent(_Strict):
    name: str
    email: Email


class Department(_Strict):
    name: str
    manager: Email | None = None
    members: list[Email] = []
    email: Email | None = None
    notifications: Annotated[dict[str, bool], AfterValidator(check_kinds)] = {}


class Team(_Strict):
    name: str
    members: list[Email] = []


class AgentsFile(_Strict):
    agents: list[Agent] = []
    departments: list[Department] = []
    teams: list[Team] = []


def _percent(value: Any) -> Any:
    if isinstance(value, str) and value.strip().endswith("%"):
        value = value.strip()[:-1]
    try:
        return int(value) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(f"not a percentage: {value!r} (use e.g. 75%)") from None


SlaTarget = Literal["first_response", "resolution"]


class Escalation(_Strict):
    """One rung of a plan's ladder: at ``at`` percent of a target (``of``; both targets when left out)."""

    at: Annotated[int, BeforeValidator(_percent), Field(gt=0, le=1000)]
    of: SlaTarget | None = None
    notify: list[str] = []  # assignee | manager | department | an address
    overdue: bool = False
    priority: Literal["low", "normal", "high", "emergency"] | None = None
    assign: Email | None = None
    tag: str | None = None

    @field_validator("notify")
    @classmethod
    def _audience(cls, value: list[str]) -> list[str]:
        return [v if v in ("assignee", "manager", "department") else _email(v) for v in value]


class SlaTargets(_Strict):
    first_response: Duration | None = None
    resolution: Duration | None = None


class SlaPlan(_Strict):
    first_response: Duration | None = None
    resolution: Duration | None = None
    schedule: str = "24x7"
    pause_on: list[Literal["awaiting_reply", "in_progress"]] = []
    priorities: dict[Literal["low", "normal", "high", "emergency"], SlaTargets] = {}  # per-priority targets
    escalations: list[Escalation] = []

    @field_validator("escalations")
    @classmethod
    def _distinct_steps(cls, value: list[Escalation]) -> list[Escalation]:
        seen: set[tuple[str, int]] = set()
        for rung in value:
            for target in (rung.of,) if rung.of else ("first_response", "resolution"):
                if (target, rung.at) in seen:
                    raise ValueError(f"two escalations at {rung.at}% of {target}; put the actions in one")
                seen.add((target, rung.at))
        return value


class SlaFile(_Strict):
    schedules: dict[str, dict[str, Any]] = {}
    sla_plans: dict[str, SlaPlan] = {}


