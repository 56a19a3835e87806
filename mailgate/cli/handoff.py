"""``ingest`` when serve is running: read each mail, hand it over, print serve's answer.

Imports the standard library, yaml (to find state_dir) and the hand-off client only: the point is
that an MTA alias costs a few hundredths of a second per mail instead of a whole pipeline's start.
"""

from __future__ import annotations

import argparse
from collections import deque

from mailgate.cli.ingest_report import IngestReport
from mailgate.intake.handoff import WINDOW, Answer, Handoff
from mailgate.intake.mailfiles import each_mail, envelope
from mailgate.paths import state_dir


def hand_over(args: argparse.Namespace) -> int | None:
    """The exit code, or None when no daemon takes the mail here (then ingest stores it itself)."""
    state = state_dir(args.config)
    if state is None:
        return None
    handoff = Handoff.open(state)
    if handoff is None:
        return None
    mail_from, rcpt = envelope(args.sender, args.recipient)
    report = IngestReport(quiet=args.quiet)
    waiting: deque[str] = deque()  # labels of the mails sent and not yet answered, oldest first
    gone: str | None = None

    def collect() -> None:
        label = waiting.popleft()
        answer = handoff.receive() if gone is None else Answer("tempfail", reason=gone)
        if answer.kind == "tempfail":
            report.tempfail(label, answer.reason or "")
        elif answer.kind == "rejected":
            report.rejected(label, answer.reason or "")
        else:
            report.stored(label, answer.status, answer.ticket, answer.reason)

    try:
        for label, raw, problem in each_mail(args.files):
            if raw is None:
                report.tempfail(label, problem or label)
                continue
            while len(waiting) >= WINDOW:
                collect()
            if gone is None:
                gone = handoff.post(raw, mail_from, rcpt)
            waiting.append(label)
        while waiting:
            collect()
    finally:
        handoff.close()
    return report.finish()
