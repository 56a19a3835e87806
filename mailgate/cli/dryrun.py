"""``mailgate rules test``: the real pipeline on one mail, rolled back, explained.

It calls the same ``ingest`` as ``serve`` with ``dry_run=True``, so what it
prints can never disagree with what the daemon would do.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from mailgate.domain import Envelope, Outcome, RouteDecision
from mailgate.hours import add_business_time, holidays_between
from mailgate.pipeline.ingest import Context, ingest
from mailgate.rules.retention import effective, shown
from mailgate.sla import plans


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
    if "forwarded" in record:  # an agent's forward (pipeline/forward_intake.py): whose mail it is
        customers["forwarded"] = record["forwarded"]
    held: dict[str, Any] = {k: record[k] for k in ("spam", "flood") if k in record}  # pipeline/holds.py
    linked: dict[str, Any] = {k: record[k] for k in ("merge", "split") if k in record}  # pipeline/links.py
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
        "retention": _retention(ctx, decision.help_topic if decision else None),
        "sla": _sla(ctx, decision) if decision and (record.get("thread") or {}).get("via") == "none" else None,
        **customers,
        **held,
        **linked,
    }


def _sla(ctx: Context, decision: RouteDecision) -> dict[str, Any] | None:
    """A new ticket's due times if it arrived now, and the holidays (hours.holidays_between) that moved them."""
    book = ctx.config.sla
    plan = book.sla_plans.get(decision.sla_plan) if book and decision.sla_plan else None
    if book is None or plan is None:
        return None
    schedule = plans.plan_schedule(plan, book.schedules)
    now = ctx.clock.now()
    due = {}
    for target, duration in plans.plan_targets(plan, decision.priority.value).items():
        at = add_business_time(schedule, now, duration).astimezone(UTC)
        moved = [{"date": day.isoformat(), "name": name} for day, name in holidays_between(schedule, now, at)]
        due[target] = {"due": at.isoformat(), "moved_over": moved}
    return {"plan": decision.sla_plan, "due": due}


def _retention(ctx: Context, topic: str | None) -> dict[str, str | None]:
    """How long this mail's ticket keeps its raw mail, attachment files and personal data (jobs/retention.py)."""
    found = next((t.retention for t in ctx.config.rules.help_topics if t.name == topic), None)
    ages = effective(found, ctx.config.main.retention)
    return {kind: shown(age) for kind, age in ages.items()}


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
    if "forwarded" in report:
        fwd = report["forwarded"]
        said = fwd.get("refused") or (f"already ticket {fwd['already_ticket']}" if "already_ticket" in fwd else None)
        acked = "" if "acknowledged" not in fwd else "; acknowledged" if fwd["acknowledged"] else "; not acknowledged"
        lines.append(f"forwarded: {fwd['summary']} ({fwd['how']}){acked}" + (f": {said}" if said else ""))
    lines += _held_lines(report)
    lines += _linked_lines(report)
    if report["sla"]:
        for target, due in report["sla"]["due"].items():
            moved = "; ".join(f"{h['date']} {h['name']}" for h in due["moved_over"])
            lines.append(f"sla {report['sla']['plan']}: {target} due {due['due']}"
                         + (f" (moved over holidays: {moved})" if moved else ""))
    kept = report["retention"]
    lines.append("retention: " + ", ".join(f"{kind} {age or 'kept'}" for kind, age in kept.items()))
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


def _linked_lines(report: dict[str, Any]) -> list[str]:
    """A merged ticket named (where the mail lands instead), an agent's #merge or #split (pipeline/links.py)."""
    lines = []
    thread = report.get("thread") or {}
    if thread.get("merged_via"):  # the ticket named was merged: the mail lands in the survivor
        lines.append(f"merged: names {thread['named']}, merged ({' -> '.join(thread['merged_via'])} -> "
                     f"{thread['ticket']}): lands in {thread['ticket']}")
    for command in ("merge", "split"):
        if command in report:
            link = report[command]
            done = f"done ({link['other']})" if link["done"] else "refused"
            lines.append(f"#{command} on {link['ticket']}: {done}: {link['detail']}")
    return lines


def _shown(value: Any) -> str:
    if value in (None, []):
        return "-"
    return ", ".join(value) if isinstance(value, list) else str(value)
