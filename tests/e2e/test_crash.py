"""The durability promise under a real crash: ``kill -9`` of ``serve`` while clients stream mail.

Several SMTP clients send 1,000 new mails; the daemon is killed with SIGKILL
in the middle. After a restart, every mail that got a 250 reply is in the
database with its ticket, and nothing is half-written: each stored mail has
exactly one ticket, one thread message and one queued acknowledgment.
"""

from __future__ import annotations

import signal
import smtplib
import threading
from pathlib import Path

from tests.conftest import PATIENCE, Service, make_mail, smtp_deliver, sql_rows, start_service, wait_until

TOTAL = 1000
CLIENTS = 4
KILL_AFTER = 300


def _client(svc: Service, index: int, acked: list[str], lock: threading.Lock) -> None:
    """One connection sending its share of the mails back to back; stops when the server dies."""
    try:
        with smtplib.SMTP(svc.host, svc.port, timeout=PATIENCE) as client:
            client.ehlo("client.example")
            for n in range(index, TOTAL, CLIENTS):
                mid = f"<crash-{n}@customer.example>"
                raw = make_mail(f"Crash test {n}", sender=f"user{n}@customer.example", message_id=mid)
                if client.mail(f"user{n}@customer.example")[0] != 250:
                    return
                if client.rcpt("support@example.com")[0] != 250:
                    return
                code, _ = client.data(raw)
                if code == 250:
                    with lock:
                        acked.append(mid)
    except (smtplib.SMTPException, OSError):
        return  # the daemon was killed: whatever was not acknowledged is the sender's to retry


def test_every_acknowledged_mail_survives_kill_9(service: Service, tmp_path: Path) -> None:
    acked: list[str] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_client, args=(service, i, acked, lock)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acked) >= KILL_AFTER or not any(t.is_alive() for t in threads),
               timeout=PATIENCE, what=f"{KILL_AFTER} acknowledged mails", log=service.output)
    service.proc.send_signal(signal.SIGKILL)
    assert service.proc.wait(PATIENCE) == -signal.SIGKILL
    for thread in threads:
        thread.join(PATIENCE)
    with lock:
        acknowledged = set(acked)
    assert KILL_AFTER <= len(acknowledged) < TOTAL, "the kill did not land in the middle of the stream"

    restarted = start_service(service.config, tmp_path / "serve-after-crash.log")
    try:
        stored = {mid for (mid,) in sql_rows(service.config, "SELECT message_id FROM inbound")}
        missing = acknowledged - stored
        assert not missing, f"{len(missing)} acknowledged mails lost, e.g. {sorted(missing)[:5]}"
        in_tickets = {mid for (mid,) in sql_rows(service.config, "SELECT message_id FROM message")}
        assert acknowledged <= in_tickets

        # nothing half-written: each stored mail is one ticket, one message, one queued ack
        [(inbound, tickets, messages, acks)] = sql_rows(service.config, """
            SELECT (SELECT count(*) FROM inbound), (SELECT count(*) FROM ticket),
                   (SELECT count(*) FROM message), (SELECT count(*) FROM outbox WHERE kind = 'ack_new')""")
        assert inbound == tickets == messages == acks == len(stored)

        # and the restarted daemon takes mail again
        code, text = smtp_deliver(restarted.host, restarted.port, make_mail(message_id="<after@customer.example>"))
        assert code == 250, text
    finally:
        assert restarted.stop() == 0
