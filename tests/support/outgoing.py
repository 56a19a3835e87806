"""Reading what a running daemon sent, from its outgoing Maildir: the mails to one address, waited for."""

from __future__ import annotations

from email.message import EmailMessage

from tests.conftest import Service, outgoing_mail, wait_until


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    return part.get_content() if part is not None else ""


def mails_to(svc: Service, address: str, contains: str = "") -> list[EmailMessage]:
    return [m for m in outgoing_mail(svc.config)
            if address in {a.addr_spec for a in m["To"].addresses} and contains in m["Subject"] + text_of(m)]


def wait_mail(svc: Service, address: str, contains: str = "", count: int = 1) -> list[EmailMessage]:
    return list(wait_until(lambda: (m := mails_to(svc, address, contains)) and len(m) >= count and m,
                           what=f"{count} mail(s) to {address} with {contains!r}", log=svc.output))
