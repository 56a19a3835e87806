"""``mailgate rules test``: the real pipeline on one mail, rolled back, explained.

It calls the same ``ingest`` as ``serve`` with ``dry_run=True``, so what it
prints can never disagree with what the daemon would do.
"""

from __future__ import annotations

from typing import Any

from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context, ingest


def explain(ctx: Context, raw: bytes, to: str | None) -> dict[str, Any]:
    rcpts = (to.lower(),) if to else ()
    outcome = ingest(raw, Envelope("", rcpts, "pipe", ctx.clock.now()), ctx, dry_run=True)
    decision = outcome.route
    action = {"accepted": "accept", "rejected": "reject", "quarantined": "quarantine"}.get(outcome.status, "accept")
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
            "assignee": decision.assignee if decision else None,
            "team": None,
            "tags": [],
            "action": action,
        },
        "notifications": [{"kind": kind, "to": list(to_list)} for kind, to_list in outcome.notifications],
        "outcome": {"status": outcome.status, "ticket": outcome.number, "reason": outcome.reason},
    }


def render_text(report: dict[str, Any]) -> str:
    topic = report["help_topic"]
    lines = [f"help topic: {topic['name'] or '-'} (found by {topic['via']})", "rules:"]
    for rule in report["rules"] or [{"name": "(none configured)", "matched": False, "reason": ""}]:
        mark = "MATCH" if rule["matched"] else "-----"
        lines.append(f"  {mark} {rule['name']}: {rule['reason']}")
    lines.append("result:")
    lines += [f"  {k:<11} {v if v not in (None, []) else '-'}" for k, v in report["result"].items()]
    lines.append("notifications:")
    lines += [f"  {n['kind']} -> {', '.join(n['to'])}" for n in report["notifications"]] or ["  (none)"]
    out = report["outcome"]
    lines.append(f"outcome: {out['status']}" + (f" ({out['reason']})" if out["reason"] else ""))
    return "\n".join(lines)
