"""The daemon registry: each ``serve`` says it is alive, and what it holds, every few seconds.

Other daemons read it to share the mailboxes out fairly, and ``mailgate status``
to show the cluster. Times are the database's (see ``leases.db_now``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from mailgate.storage.db import Database
from mailgate.storage.leases import db_now


@dataclass(frozen=True)
class Me:
    name: str
    host: str
    pid: int
    version: str
    machine: str = ""  # boot id and PID namespace: where a pid names the same process as for us


def beat(db: Database, me: Me, holds: list[str]) -> None:
    """Record that this daemon is alive now, holding ``holds`` (the first beat also records its start)."""
    with db.transaction(relaxed=True) as session:
        now = db_now(session)
        values = {"n": me.name, "h": me.host, "m": me.machine, "p": me.pid, "v": me.version, "now": now,
                  "holds": json.dumps(holds)}
        done = session.execute(
            text(
                "UPDATE daemon SET host = :h, machine = :m, pid = :p, version = :v, last_seen = :now, "
                "stopped = NULL, holds = :holds WHERE name = :n"
            ),
            values,
        )
        if done.rowcount == 0:  # type: ignore[attr-defined]
            session.execute(
                text(
                    "INSERT INTO daemon (name, host, machine, pid, version, started, last_seen, stopped, holds) "
                    "VALUES (:n, :h, :m, :p, :v, :now, :now, NULL, :holds)"
                ),
                values,
            )


def stopped(db: Database, name: str) -> None:
    with db.transaction(relaxed=True) as session:
        session.execute(
            text("UPDATE daemon SET stopped = :now, last_seen = :now, holds = '[]' WHERE name = :n"),
            {"n": name, "now": db_now(session)},
        )


def alive_count(db: Database, me: Me, within: float) -> int:
    """This daemon and the others that beat within the last ``within`` seconds and did not say they stopped."""
    with db.reader() as session:
        now = db_now(session)
        others = session.execute(
            text("SELECT count(*) FROM daemon WHERE name <> :n AND stopped IS NULL AND last_seen > :since"),
            {"n": me.name, "since": now - within},
        ).scalar_one()
    return int(others) + 1


@dataclass(frozen=True)
class DaemonState:
    name: str
    host: str
    pid: int
    version: str
    alive: bool
    up_for: float  # seconds since it started
    last_seen_ago: float
    stopped_ago: float | None
    holds: list[str]


def daemons(session: Session, within: float) -> list[DaemonState]:
    now = db_now(session)
    rows = session.execute(
        text("SELECT name, host, pid, version, started, last_seen, stopped, holds FROM daemon ORDER BY name")
    ).all()
    return [
        DaemonState(
            name=r.name,
            host=r.host,
            pid=int(r.pid),
            version=r.version,
            alive=r.stopped is None and now - r.last_seen < within,
            up_for=(r.stopped or now) - r.started,
            last_seen_ago=now - r.last_seen,
            stopped_ago=None if r.stopped is None else now - r.stopped,
            holds=list(json.loads(r.holds or "[]")),
        )
        for r in rows
    ]


def forget_stale(db: Database, older_than: float) -> None:
    """Rows of daemons gone for longer than ``older_than`` seconds: the registry does not grow forever."""
    with db.transaction(relaxed=True) as session:
        session.execute(text("DELETE FROM daemon WHERE last_seen < :t"), {"t": db_now(session) - older_than})


def local_peers(db: Database, me: Me) -> list[tuple[str, int]]:
    """Other daemons whose pids are ours to check (same boot, same PID namespace) and that did not say
    they stopped: (name, pid)."""
    if not me.machine:
        return []
    with db.reader() as session:
        rows = session.execute(
            text("SELECT name, pid FROM daemon WHERE machine = :m AND name <> :n AND stopped IS NULL"),
            {"m": me.machine, "n": me.name},
        ).all()
    return [(r.name, int(r.pid)) for r in rows]


def declare_dead(db: Database, name: str) -> None:
    """A daemon of this host whose process is gone (killed, crashed): its leases end now, not at expiry."""
    with db.transaction() as session:
        now = db_now(session)
        session.execute(text("UPDATE mailbox_lease SET expires = 0 WHERE holder = :n"), {"n": name})
        session.execute(text("UPDATE daemon SET stopped = :now, holds = '[]' WHERE name = :n"), {"n": name, "now": now})


def disagreements(db: Database, me: Me, settings: dict[str, str], within: float) -> list[str]:
    """Record this daemon's ``settings`` and compare them with those of the other daemons alive: each
    difference is one line naming the setting and the daemon (the caller refuses to start on any)."""
    beat(db, me, [])
    with db.transaction() as session:
        session.execute(text("UPDATE daemon SET settings = :s WHERE name = :n"),
                        {"s": json.dumps(settings, sort_keys=True), "n": me.name})
        now = db_now(session)
        rows = session.execute(
            text("SELECT name, host, settings FROM daemon WHERE name <> :n AND stopped IS NULL AND last_seen > :t"),
            {"n": me.name, "t": now - within},
        ).all()
    found = []
    for row in rows:
        theirs = json.loads(row.settings or "{}")
        for key, value in sorted(settings.items()):
            if key in theirs and theirs[key] != value:
                found.append(f"{key} differs from daemon {row.name} on {row.host} ({theirs[key]!r} there, "
                             f"{value!r} here)")
    return found
