"""``mailgate rules test``: the real pipeline on one mail, rolled back, explained.

It calls the same ``ingest`` as ``serve`` with ``dry_run=True``, so what it
prints can never disagree with what the daemon would do.
"""

from __future__ import annotations

from typing import Any

from mailgate.domain import Envelope, Outcome, RouteDecision
from mailgate.pipeline.ingest import Context, ingest


def _assignee(decision: RouteDecision) -> str | None:
    """The agent, or the request (``round_robin:Tier 2``) when apply still has to pick one."""
    if decision.assignee is None and decision.assign_strategy is not None:
        return f"{decision.assign_strategy}:{decision.assign_team}"
    return decision.assignee


def _action(outcome: Outcome) -> str:
    if outcome.route is not None and outcome.route.action != "accept":
        return outcome.route.action
    return {"accepted": "accept", "rejected": "reject", "quarantined": "quarantine"}.get(outcome.status, "accept")


def explain(ctx: Context, raw: bytes, to: str | None) -> dict[str, Any]:
    rcpts = (to.lower(),) if to else ()
    outcome = ingest(raw, Envelope("", rcpts, "pipe", ctx.clock.now()), ctx, dry_run=True)
    decision = outcome.route
    record = outcome.decision or {}
    customers: dict[str, Any] = {k: record[k] for k in ("customer_close", "status_request") if k in record}
    held: dict[str, Any] = {k: record[k] for k in ("spam", "flood") if k in record}  # pipeline/holds.py
    return {
        "help_topic": {
            "name": decision.help_topic if decision else None,
            "via": decision.help_topic_via if decision else "none",
        },
        "rules": [{"name": t.name, "matched": t.matched, "reason": t.reason} for t in outcome.trace],
        "result": {
            "help_topic": decision.help_topic if decision else None,
            "department": decision.department if decision else None,
            "priority": decision.priority.value if decision else None,
            "sla_plan": decision.sla_plan if decision else None,
            "assignee": _assignee(decision) if decision else None,
            "team": decision.team if decision else None,
            "tags": list(decision.tags) if decision else [],
            "action": _action(outcome),
        },
        "changes": list(decision.changes) if decision else [],
        "thread": record.get("thread"),
        "speaks_as": record.get("speaks_as"),
        "notifications": [{"kind": kind, "to": list(to_list)} for kind, to_list in outcome.notifications],
        "outcome": {"status": outcome.status, "ticket": outcome.number, "reason": outcome.reason},
        **customers,
        **held,
    }


def render_text(report: dict[str, Any]) -> str:
    topic = report["help_topic"]
    lines = [f"help topic: {topic['name'] or '-'} (found by {topic['via']})", "rules:"]
    for rule in report["rules"] or [{"name": "(none configured)", "matched": False, "reason": ""}]:
        mark = "MATCH" if rule["matched"] else "-----"
        lines.append(f"  {mark} {rule['name']}: {rule['reason']}")
    lines.append("result:")
    lines += [f"  {k:<11} {_shown(v)}" for k, v in report["result"].items()]
    lines.append("changes:")
    lines += [f"  {change}" for change in report["changes"]] or ["  (none)"]
    if report["thread"]:
        thread = report["thread"]
        lines.append(f"thread: {thread['via']}" + (f" -> ticket {thread['ticket']}" if thread["ticket"] else ""))
    lines.append("notifications:" + (f" (from {report['speaks_as']})" if report["speaks_as"] else ""))
    lines += [f"  {n['kind']} -> {', '.join(n['to'])}" for n in report["notifications"]] or ["  (none)"]
    if "customer_close" in report:
        close = report["customer_close"]
        done = "carried out" if close["acts"] else "ignored"
        lines.append(f"customer close: {close['command']} on {close['ticket'] or '-'} {done}: {close['reason']}")
    if "status_request" in report:
        asked = report["status_request"]
        lines.append(f"status request: {'answered' if asked['answered'] else 'not answered'}: {asked['reason']}")
    lines += _held_lines(report)
    out = report["outcome"]
    lines.append(f"outcome: {out['status']}" + (f" ({out['reason']})" if out["reason"] else ""))
    return "\n".join(lines)


def _held_lines(report: dict[str, Any]) -> list[str]:
    """The relay's verdict (believed or not, and why) and flood control's count (pipeline/holds.py)."""
    lines = []
    if "spam" in report:
        spam = report["spam"]
        score = "-" if spam["score"] is None else spam["score"]
        believed = "trusted" if spam["trusted"] else "not trusted"
        lines.append(f"spam verdict: spam={str(spam['spam']).lower()} spam_score={score} dmarc={spam['dmarc']} "
                     f"({believed}: {spam['why']})")
        lines += [f"  read:    {used}" for used in spam["used"]]
        lines += [f"  ignored: {ignored}" for ignored in spam["ignored"]]
    if "flood" in report:
        flood = report["flood"]
        lines.append(f"flood control: {flood.get('rung') or flood.get('why')}"
                     + (f", held (incident {flood['incident']})" if flood.get("held") else ""))
    return lines


def _shown(value: Any) -> str:
    if value in (None, []):
        return "-"
    return ", ".join(value) if isinstance(value, list) else str(value)
