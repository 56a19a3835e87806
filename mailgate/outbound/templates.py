"""Notification templates: Jinja2 in a sandbox with strict undefined, because admins edit them.

Each kind is a triple ``<kind>.subject.j2``, ``<kind>.txt.j2``, ``<kind>.html.j2``
(the HTML one optional). Rendering happens while the outbox row is written,
so a broken template fails inside the transaction that can report it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from mailgate.domain import NOTIFICATION_KINDS

KINDS = (*NOTIFICATION_KINDS, "admin_alert")  # every kind mailgate renders: checked at load

SAMPLE_CONTEXT: dict[str, Any] = {
    "ticket": {
        "number": "123456",
        "subject": "Printer on fire",
        "status": "open",
        "priority": "normal",
        "help_topic": "General",
        "department": "Support",
        "assignee": "jane@example.com",
        "tag": "[#123456]",
    },
    "requester": {"name": "Pat Customer", "email": "pat@example.net"},
    "support_address": "support@example.com",
    "reply_marker": "-- Reply above this line --",
    "message": {
        "text": "My printer is on fire.",
        "subject": "Printer on fire",
        "from": "pat@example.net",
        "from_name": "Pat Customer",
    },
    "recipient": {"name": "Jane Doe", "email": "jane@example.com"},
    "open_tickets": [  # status_list: a customer's open tickets
        {"number": "123456", "tag": "[#123456]", "subject": "Printer on fire", "status": "open",
         "updated_at": "2026-01-05 09:00 UTC"},
    ],
    "more_tickets": False,
    "change": {
        "status": "resolved",
        "what": "Assigned to you",
        "by": "jerry@example.com",
        "reason": "Mail from this sender is not accepted.",
        "kept_as": "note",
        "target": "first response",
        "step": "75%",
        "due": "2026-01-05T17:00:00+00:00",
        "linked": "[#654321]",  # notice_merged: the ticket merged in; notice_split: the one split off from
    },
    "alert": {
        "kind": "failing",
        "title": "IMAP intake failing",
        "detail": "Mailbox support has been failing for 15 min. Last error: login refused.",
        "mailbox": "support",
        "since": "2026-01-05T09:00:00+00:00",
        "host": "imap.example.com",
        "folder": "INBOX",
    },
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


class Templates:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(folder)),
            undefined=StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html.j2")),
            keep_trailing_newline=True,
            auto_reload=False,  # a reload (SIGHUP, file watch) builds new Templates; no stat() per render
        )

    def render(self, kind: str, context: dict[str, Any], subject_of: str | None = None) -> Rendered:
        """``subject_of``: the kind whose subject to use when ``kind`` has none (a canned reply's body)."""
        try:
            subject = self.env.get_template(f"{kind}.subject.j2").render(context)
        except TemplateNotFound:
            if subject_of is None:
                raise
            subject = self.env.get_template(f"{subject_of}.subject.j2").render(context)
        text = self.env.get_template(f"{kind}.txt.j2").render(context)
        try:
            html: str | None = self.env.get_template(f"{kind}.html.j2").render(context)
        except TemplateNotFound:
            html = None
        return Rendered(" ".join(subject.split()), text, html)

    def check(self) -> list[str]:
        """Render every kind against a sample, as ``file:line: message`` problems."""
        problems = []
        for kind in KINDS:
            try:
                self.render(kind, SAMPLE_CONTEXT)
            except TemplateNotFound as exc:
                problems.append(f"{self.folder / str(exc.name)}:1: template missing")
            except TemplateError as exc:
                name, line = _template_position(exc, f"{self.folder}/{kind}.*.j2")
                problems.append(f"{name}:{line}: {exc.message if hasattr(exc, 'message') else exc}")
        return problems


def _template_position(exc: TemplateError, fallback: str) -> tuple[str, int]:
    """Where in the template it failed: syntax errors carry it; runtime errors have it in the traceback,
    which Jinja rewrites so that template frames show the template's file and line."""
    name, line = getattr(exc, "filename", None), getattr(exc, "lineno", None)
    if name and line:
        return str(name), int(line)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".j2"):
            name, line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next
    return (str(name), int(line)) if name and line else (fallback, 1)
