"""What ``retention run`` and ``forget`` did (or, with ``--dry-run``, would do), for a person to read."""

from __future__ import annotations

from mailgate.jobs.forget import ForgetReport
from mailgate.jobs.retention import Report


def _numbers(numbers: list[str]) -> str:
    if not numbers:
        return ""
    return f": {', '.join(numbers[:20])}" + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")


def retention_text(report: Report) -> str:
    data = report.as_json()
    verb = "would be" if report.dry_run else "were"
    if report.skipped:
        return f"retention: skipped ({report.skipped})"
    anonymised = data["tickets_anonymised"]
    raw, attachments = data["raw_mail"], data["attachments"]
    lines = [
        f"{anonymised['count']} closed ticket(s) {verb} anonymised{_numbers(anonymised['tickets'])}",
        f"{raw['count']} raw mail(s) {verb} deleted ({raw['without_ticket']} kept without a ticket)"
        + _numbers(raw["tickets"]),
        f"{attachments['count']} attachment(s) {verb} purged{_numbers(attachments['tickets'])}",
        f"{report.files} attachment file(s) {verb} deleted from this daemon's state_dir",
    ]
    if report.dry_run:
        lines.append("dry run: nothing was changed")
    return "\n".join(lines)


def forget_text(address: str, report: ForgetReport) -> str:
    if report.refused:
        return f"{address}: refused: {report.refused}"
    data = report.as_json()
    verb = "would be" if report.dry_run else "were"
    if not report.tickets and not any(data[k] for k in ("mail_without_ticket", "outbox_without_ticket",
                                                        "suppressions_removed")):
        return f"{address}: nothing to erase (no ticket, mail or outbox row names it)"
    lines = [f"{address}: erased on {len(report.tickets)} ticket(s)" if not report.dry_run
             else f"{address}: would be erased on {len(report.tickets)} ticket(s)"]
    lines += [f"  {number} ({status})" for number, status in report.tickets]
    lines += [
        f"{data['addresses_replaced']} address(es) {verb} replaced, {data['messages_redacted']} message(s) redacted",
        f"{data['raw_mail_deleted']} raw mail(s) and {data['attachments_deleted']} attachment(s) {verb} deleted "
        f"({data['files_deleted']} file(s) here)",
        f"{data['outbox_removed']} unsent mail(s) to the address {verb} removed; "
        f"{data['suppressions_removed']} suppression(s) dropped",
        f"{data['mail_without_ticket']} mail(s) kept without a ticket (quarantine) and "
        f"{data['outbox_without_ticket']} outbox row(s) without a ticket {verb} cleared of it",
    ]
    for number in report.open_tickets:
        lines.append(f"NOTE: ticket {number} is still open: its {'' if report.dry_run else 'erased '}person can no "
                     f"longer be mailed from it, and what they wrote {'would be' if report.dry_run else 'is'} gone")
    if report.dry_run:
        lines.append("dry run: nothing was changed")
    return "\n".join(lines)
