"""Mailbox leases on the real database (SQLite, or PostgreSQL with MAILGATE_TEST_DATABASE_URL).

The adversary throughout is a daemon that lost its lease without knowing it (paused, cut off, slow):
whatever it still tries to do with its old token, renewing, storing a fetched mail or moving it, must
fail, and the new holder's token must be the only one that works.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.daemon.coordinator import Coordinator
from mailgate.domain import Envelope
from mailgate.errors import LeaseLost
from mailgate.intake.imap import ImapIntake
from mailgate.pipeline.ingest import Context, ingest_batch
from mailgate.storage import leases, registry
from mailgate.storage.db import Database
from mailgate.storage.model import Inbound
from tests.conftest import MakeConfig, free_port

TTL = 0.6  # seconds; short so that expiry is quick, long enough for a slow machine's statements


def _wait(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_one_holder_at_a_time_and_every_takeover_raises_the_token(ctx: Context) -> None:
    db = ctx.db
    first = leases.acquire(db, "support", "daemon-a", TTL)
    assert first is not None and first.token == 1 and first.valid()
    assert leases.acquire(db, "support", "daemon-b", TTL) is None  # held: nobody else gets it
    assert leases.acquire(db, "billing", "daemon-b", TTL) is not None  # another mailbox is independent
    again = leases.acquire(db, "support", "daemon-a", TTL)  # the holder asking again keeps its token
    assert again is not None and again.token == 1

    second = _wait(lambda: leases.acquire(db, "support", "daemon-b", TTL), "the lease to expire")
    assert second.token == 2
    assert leases.renew(db, first) is False and not first.valid()  # the old holder cannot renew its way back
    assert leases.renew(db, second) is True and second.valid()
    with db.transaction() as session:
        assert leases.still_held(session, "support", 1) is False
        assert leases.still_held(session, "support", 2) is True


def test_an_expired_lease_cannot_be_revived_by_renewing(ctx: Context) -> None:
    """Past its expiry a lease is gone even if nobody took it: the holder's pollers already stopped at
    their deadline, and only a new acquisition (a new token) may start them again."""
    held = leases.acquire(ctx.db, "support", "daemon-a", TTL)
    assert held is not None
    _wait(lambda: not held.valid(), "the local deadline")
    with ctx.db.transaction() as session:
        _wait(lambda: not leases.still_held(session, "support", held.token), "the expiry")
    assert leases.renew(ctx.db, held) is False
    again = leases.acquire(ctx.db, "support", "daemon-a", TTL)
    assert again is not None and again.token == held.token + 1


def test_a_released_lease_is_taken_at_once_and_the_releaser_is_fenced(ctx: Context) -> None:
    db = ctx.db
    held = leases.acquire(db, "support", "daemon-a", 60.0)
    assert held is not None
    leases.release(db, held)
    assert not held.valid()
    taken = leases.acquire(db, "support", "daemon-b", 60.0)
    assert taken is not None and taken.token == 2
    assert leases.renew(db, held) is False
    forged = leases.Lease("support", "daemon-a", 2, 60.0)  # the right token under the wrong name
    assert leases.renew(db, forged) is False


def _fetched(mid: str, token: int | None) -> tuple[bytes, Envelope]:
    raw = (f"From: pat@customer.example\r\nTo: support@example.com\r\nSubject: Printer {mid}\r\n"
           f"Message-ID: <{mid}@customer.example>\r\n\r\nIt jams.\r\n").encode()  # fmt: skip
    env = Envelope("pat@customer.example", ("support@example.com",), "imap", FixedClock().now(), "imap.example:993",
                   mailbox="support", lease_token=token)
    return raw, env


def _stored(db: Database) -> int:
    with db.reader() as session:
        return int(session.scalar(select(func.count()).select_from(Inbound)) or 0)


def test_mail_fetched_under_a_lost_lease_is_not_stored(ctx: Context) -> None:
    old = leases.acquire(ctx.db, "support", "daemon-a", TTL)
    assert old is not None
    new = _wait(lambda: leases.acquire(ctx.db, "support", "daemon-b", TTL), "the takeover")
    outcomes = ingest_batch([_fetched("old", old.token), _fetched("new", new.token)], ctx)
    assert isinstance(outcomes[0], LeaseLost)  # the paused daemon's fetch is refused in the storing transaction
    assert getattr(outcomes[1], "status", None) == "accepted"  # the new holder's is stored
    assert _stored(ctx.db) == 1
    forged = ingest_batch([_fetched("forged", new.token + 1)], ctx)  # a token nobody was given
    assert isinstance(forged[0], LeaseLost) and _stored(ctx.db) == 1
    plain = ingest_batch([_fetched("smtp", None)], ctx)  # mail not fetched under a lease is not fenced
    assert getattr(plain[0], "status", None) == "accepted"


def _cluster_config(make_config: MakeConfig, tmp_path: Path, name: str, mailboxes: list[str]) -> Path:
    closed = free_port()  # nothing listens: the pollers fail to connect and back off, the leases are the point
    path = make_config(
        cluster={"name": name, "lease_time": "2s"},
        intake={"imap": [{"name": mb, "host": "127.0.0.1", "port": closed, "security": "plain", "username": mb,
                          "password": "x", "idle": False} for mb in mailboxes]},
    )
    target = tmp_path / f"{name}.yaml"
    target.write_text(path.read_text())
    for side in ("rules.yaml", "agents.yaml", "sla.yaml"):
        (tmp_path / side).write_text((path.parent / side).read_text())
    return target


@pytest.fixture
def two_daemons(make_config: MakeConfig, tmp_path: Path) -> Any:
    names = ["mb1", "mb2", "mb3", "mb4", "mb5"]
    made = []
    for daemon in ("east", "west"):
        ctx = build_context(load_config(_cluster_config(make_config, tmp_path, daemon, names)))
        ctx.db.upgrade()
        imap = ImapIntake(lambda c=ctx: c, lambda raw, env: None)  # type: ignore[arg-type,return-value]
        made.append((Coordinator(lambda c=ctx: c, imap), imap, ctx))
    yield made, names
    for _, imap, ctx in made:
        imap.stop(5)
        ctx.db.dispose()


def test_daemons_share_the_mailboxes_and_take_over_from_one_that_stops(two_daemons: Any) -> None:
    (east, east_imap, ctx), (west, west_imap, _), names = *two_daemons[0], two_daemons[1]
    east.tick()
    assert east.held() == names  # alone: it takes everything
    west.tick()  # a second daemon appears: it takes what is free (nothing yet)
    east.tick()  # ... and the first gives up what is above its share of 3
    assert len(east.held()) == 3
    west.tick()
    assert sorted(east.held() + west.held()) == names and not set(east.held()) & set(west.held())
    assert sorted(east_imap.health()) == east.held() and sorted(west_imap.health()) == west.held()
    with ctx.db.reader() as session:
        rows = {r.mailbox: r.holder for r in leases.leases(session) if r.expires_in > 0}
        alive = [d.name for d in registry.daemons(session, 2.0) if d.alive]
    assert rows == {**{m: "east" for m in east.held()}, **{m: "west" for m in west.held()}}
    assert sorted(alive) == ["east", "west"]

    west_imap.stop(5)
    west.resign()  # a clean stop gives everything back at once
    east.tick()
    assert east.held() == names


def test_a_silent_daemon_loses_its_mailboxes_after_its_lease(two_daemons: Any) -> None:
    (east, _, _), (west, _, _), names = *two_daemons[0], two_daemons[1]
    east.tick()
    west.tick()
    east.tick()
    west.tick()
    taken_from = set(west.held())
    assert taken_from
    started = time.monotonic()

    def east_has_all() -> bool:  # west stops ticking (paused, partitioned); east keeps going
        east.tick()
        return east.held() == names

    _wait(east_has_all, "east taking west's mailboxes")
    assert time.monotonic() - started < 2 * 2.0 + 2.0  # within two lease times (plus a slow machine's slack)
    west.tick()  # west wakes up: its renewals fail, and it holds nothing that east holds
    assert not set(west.held()) & set(east.held())
