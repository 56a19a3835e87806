"""An oversized or broken mail never blocks a mailbox: the real ``serve`` against a private Dovecot.

A mail over the mailbox's ``max_message_size`` (by the server's RFC822.SIZE, before anything is
fetched) is recorded from its header in quarantine, moved out of the way, and reported to the admin
once; the mail behind it is fetched as usual.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from pathlib import Path

from imapclient import FLAGGED, SEEN
from sqlalchemy import select

from mailgate.storage.model import InboundRaw
from tests.conftest import run_cli
from tests.e2e.test_imap_intake import Run, append, at_least, count, imap_config, mail, mailbox, serve, wait_until
from tests.support.dovecot_fixture import DovecotServer

__all__ = ["imap_config", "serve"]  # fixtures, used by name

LIMIT = 64 * 1024


def big_mail(subject: str, mid: str, size: int = 200 * 1024) -> bytes:
    blob = base64.encodebytes(os.urandom(size * 3 // 4)).decode().replace("\n", "\r\n")
    return (
        f"From: Sam Scanner <sam@customer.example>\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{mid}>\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n'
        f"All the scans attached.\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; filename=scans.pdf\r\n\r\n{blob}\r\n--b1--\r\n"
    ).encode()


def quarantined(run: Run) -> list[int]:
    return [r.id for r in run.inbound() if r.status == "quarantined"]


def raw_kept(run: Run, inbound_id: int) -> bool:
    with run.db.reader() as session:
        return session.scalar(select(InboundRaw.inbound_id).where(InboundRaw.inbound_id == inbound_id)) is not None


def move_back(dovecot: DovecotServer, user: str, folder: str) -> None:
    with dovecot.imap(user) as client:
        client.select_folder(folder)
        client.move(client.search(["ALL"]), "INBOX")


def test_a_mail_over_the_limit_is_set_aside_and_the_mail_behind_it_is_fetched(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run], tmp_path: Path
) -> None:
    user, pw = dovecot.add_user()
    append(dovecot, user, mail("Before", "before@customer.example"), big_mail("Scans", "scans@customer.example"),
           mail("After", "after@customer.example"))
    config = imap_config([mailbox(dovecot, user, pw, quarantine_folder="Quarantine", max_message_size=LIMIT)],
                         admin_email="admin@example.com")
    run = serve(config)
    tickets = run.wait_tickets(2)
    assert sorted(t.subject for t in tickets) == ["After", "Before"]
    wait_until(lambda: count(dovecot, user, "Quarantine") == 1, "the big mail in Quarantine", run)
    wait_until(lambda: count(dovecot, user, "Processed") == 2, "the two others in Processed", run)
    assert count(dovecot, user, "INBOX") == 0

    [kept] = quarantined(run)
    [row] = [r for r in run.inbound() if r.id == kept]
    assert row.reason is not None and row.reason.startswith("too large: ") and str(LIMIT) in row.reason
    assert row.size > LIMIT and row.message_id == "<scans@customer.example>" and not raw_kept(run, kept)
    assert row.mailbox == "support" and row.ticket_id is None
    [alert] = wait_until(lambda: run.outbox("admin_alert"), "the admin alert", run)
    assert alert.dedupe_key == f"admin_alert:support:unfetched:inbound-{kept}"
    assert "Scans" in alert.text and "Quarantine" in alert.text and alert.recipients == ["admin@example.com"]
    assert re.search(rf'msg="mail received" outcome=quarantined source=imap mailbox=support id={kept} ', run.output())

    explained = run_cli(config, "explain", str(kept))
    assert explained.code == 0 and "not fetched" in explained.stdout and "Subject: Scans" in explained.stdout
    again = run_cli(config, "quarantine", "reprocess", str(kept))
    assert "never fetched" in again.stdout + again.stderr and "Quarantine" in again.stdout + again.stderr
    assert quarantined(run) == [kept]  # still kept, not replayed from a header

    # An admin moves it back without raising the limit: set aside again, no second record, no second alert.
    move_back(dovecot, user, "Quarantine")
    append(dovecot, user, mail("Later", "later@customer.example"))  # wakes the IDLE poller
    run.wait_tickets(3)
    wait_until(lambda: count(dovecot, user, "Quarantine") == 1, "the big mail back in Quarantine", run)
    assert quarantined(run) == [kept] and len(run.outbox("admin_alert")) == 1

    # With the limit raised, the same mail moved back is fetched whole and becomes a ticket.
    assert run.service is not None
    run.service.stop()
    raised = imap_config([mailbox(dovecot, user, pw, quarantine_folder="Quarantine")], admin_email="admin@example.com")
    run.config = raised
    run.start()
    move_back(dovecot, user, "Quarantine")
    tickets = at_least(run.tickets, 4, "the big mail's ticket", run, timeout=120)
    assert "Scans" in {t.subject for t in tickets}
    wait_until(lambda: count(dovecot, user, "INBOX") == 0, "the big mail taken", run)


def test_leave_in_place_flags_the_big_mail_and_the_checkpoint_passes_it(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    """Without processed or quarantine folder the big mail stays, flagged \\Seen and \\Flagged so that a
    person sees it in their mail client; a restart does not record it twice."""
    user, pw = dovecot.add_user()
    append(dovecot, user, big_mail("Scans", "scans2@customer.example"), mail("After", "after2@customer.example"))
    config = imap_config([mailbox(dovecot, user, pw, processed_folder=None, max_message_size=LIMIT)])
    run = serve(config)
    run.wait_tickets(1)
    wait_until(lambda: len(quarantined(run)) == 1, "the record of the big mail", run)

    def flags() -> dict[int, tuple[bytes, ...]]:
        with dovecot.imap(user) as client:
            client.select_folder("INBOX", readonly=True)
            return {uid: data[b"FLAGS"] for uid, data in client.fetch(client.search(["ALL"]), ["FLAGS"]).items()}

    wait_until(lambda: len(flags()) == 2 and all(SEEN in f for f in flags().values()), "both flagged seen", run)
    first, second = sorted(flags().items())
    assert FLAGGED in first[1] and FLAGGED not in second[1]
    state = wait_until(lambda: (s := run.state("support")) and s.last_uid == 2 and s, "the checkpoint past both", run)
    assert state.last_uid == 2
    assert run.service is not None
    run.service.stop()
    run.start()
    append(dovecot, user, mail("Third", "third2@customer.example"))
    run.wait_tickets(2)
    assert len(quarantined(run)) == 1


def test_a_mail_the_server_cannot_read_is_set_aside_after_three_tries(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    """Dovecot answers a FETCH of a mail whose file it cannot read with NIL (and an error in its log): the
    mail behind it is stored at once, the broken one is tried again in the next rounds and then recorded and moved."""
    user, pw = dovecot.add_user()
    append(dovecot, user, mail("Before", "before3@customer.example"), mail("Broken", "broken3@customer.example"),
           mail("After", "after3@customer.example"))
    [broken] = [f for f in Path(dovecot.maildir(user), "new").iterdir() if b"Broken" in f.read_bytes()]
    broken.unlink()  # a symlink to a directory: Dovecot can no longer read it, and does not drop it either
    broken.with_suffix(".gone").mkdir()
    broken.symlink_to(broken.with_suffix(".gone"))
    config = imap_config([mailbox(dovecot, user, pw, quarantine_folder="Quarantine")],
                         admin_email="admin@example.com")
    run = serve(config)
    assert sorted(t.subject for t in run.wait_tickets(2)) == ["After", "Before"]
    kept = wait_until(lambda: quarantined(run), "the record of the unreadable mail", run, timeout=120)
    [row] = [r for r in run.inbound() if r.id == kept[0]]
    assert row.reason is not None and row.reason.startswith("could not be fetched (3 attempts)")
    [alert] = wait_until(lambda: run.outbox("admin_alert"), "the admin alert", run)
    assert alert.dedupe_key == f"admin_alert:support:unfetched:inbound-{kept[0]}"
    assert len(run.tickets()) == 2


def test_check_config_names_a_bad_max_message_size_with_its_line(imap_config: Callable[..., Path]) -> None:
    config = imap_config([{"name": "support", "host": "127.0.0.1", "security": "plain", "username": "u",
                           "password": "p", "max_message_size": "lots"}])  # fmt: skip
    result = run_cli(config, "check-config")
    assert result.code == 1
    [line] = [ln for ln in result.stderr.splitlines() if "not a size: 'lots'" in ln]
    number = int(re.match(r".*mailgate\.yaml:(\d+): ", line).group(1))  # type: ignore[union-attr]
    assert "max_message_size" in config.read_text().splitlines()[number - 1], (line, config.read_text())
