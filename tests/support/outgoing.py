"""What a running daemon did, read from outside: the mails it sent (its outgoing Maildir), the record
``explain`` keeps of a received mail once it is processed, and a ticket as ``tickets show`` gives it."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from tests.conftest import Service, cli_json, outgoing_mail, sql_rows, wait_until


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    return part.get_content() if part is not None else ""


def mails_to(svc: Service, address: str, contains: str = "") -> list[EmailMessage]:
    return [m for m in outgoing_mail(svc.config)
            if address in {a.addr_spec for a in m["To"].addresses} and contains in m["Subject"] + text_of(m)]


def wait_mail(svc: Service, address: str, contains: str = "", count: int = 1) -> list[EmailMessage]:
    return list(wait_until(lambda: (m := mails_to(svc, address, contains)) and len(m) >= count and m,
                           what=f"{count} mail(s) to {address} with {contains!r}", log=svc.output))


def record(svc: Service, mid: str) -> dict[str, Any]:
    """The explain record of a received mail, once it is processed."""
    def done() -> int | None:
        rows = sql_rows(svc.config, "SELECT id, message_id FROM inbound WHERE processed_at IS NOT NULL")
        return next((row_id for row_id, found in rows if found == mid), None)

    row_id = wait_until(done, what=f"mail {mid} processed", log=svc.output)
    return dict(cli_json(svc.config, "explain", f"id:{row_id}"))


def show(svc: Service, number: str) -> dict[str, Any]:
    return dict(cli_json(svc.config, "tickets", "show", number))
