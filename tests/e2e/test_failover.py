"""Three daemons on one PostgreSQL, with mail streaming in over SMTP and into four IMAP mailboxes:
one is killed with ``kill -9`` mid-stream, another paused (SIGSTOP) past its lease and resumed.

What must hold at the end: every mail stored once (one ticket per new mail, whichever daemon and
however often it was delivered), every mailbox drained, no mail moved by a daemon after it lost the
lease of that mailbox, each acknowledgment sent once (the crash bound of RELIABILITY.md: one per kill
that fell while a mail was on the wire), each SLA rung fired once. The takeover times are printed.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import (
    PG_URL,
    MakeConfig,
    SmtpSink,
    free_port,
    make_mail,
    run_cli,
    smtp_deliver,
    sql_rows,
    wait_until,
)
from tests.resilience.harness import (
    Daemon,
    Mta,
    Supervisor,
    folder_count,
    intake_check,
    mail_factory,
    outgoing_check,
    summary,
    wait_outbox_sent,
)
from tests.resilience.test_crash_points import STEPS_PER_TICKET, TINY_RULES, TINY_SLA
from tests.support.dovecot_fixture import DovecotServer

pytestmark = pytest.mark.skipif(not PG_URL, reason="several daemons share one PostgreSQL (MAILGATE_TEST_DATABASE_URL)")

LEASE = 3.0  # seconds: cluster.lease_time of every daemon
MAILBOXES = 4
# written right before each command that acknowledges mail on the server, after the last look at the lease
ACKNOWLEDGING = re.compile(r'msg="imap acknowledging" mailbox=(\S+) mails=\d+ token=(\d+)')


def _configs(make_config: MakeConfig, tmp_path: Path, dovecot: DovecotServer, sink: SmtpSink) -> list[Path]:
    users = [dovecot.add_user() for _ in range(MAILBOXES)]
    base = make_config(
        sla=TINY_SLA, rules=TINY_RULES,
        outbound={"transport": "smtp", "smtp": {"host": sink.host, "port": sink.port}, "lease": "5s",
                  "retry": {"first": "1s", "maximum": "2s"}},
        scheduler={"outbox_interval": "1s", "sla_interval": "0.5s"},
        security={"secret_file": str(tmp_path / "shared-secret")},  # must be the same on every daemon
        cluster={"lease_time": f"{LEASE:g}s"},
        logging={"level": "debug"},  # "imap acknowledging": which token each MOVE was sent under
        intake={"imap": [{"name": f"mb{i}", "host": dovecot.host, "port": dovecot.imap_port, "security": "plain",
                          "username": user, "password": pw, "processed_folder": "Processed", "poll_interval": "2s"}
                         for i, (user, pw) in enumerate(users)]},
    )
    settings = yaml.safe_load(base.read_text())
    made = []
    for n in range(3):
        settings["cluster"]["name"] = f"d{n}"
        settings["state_dir"] = str(tmp_path / f"state-d{n}")
        settings["intake"]["smtp"]["listen"] = f"127.0.0.1:{free_port()}"
        path = base.with_name(f"d{n}.yaml")
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        made.append(path)
    return made


def _users(config: Path) -> list[str]:
    return [mb["username"] for mb in yaml.safe_load(config.read_text())["intake"]["imap"]]


def _status(config: Path) -> dict[str, Any]:
    result = run_cli(config, "status", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _holders(config: Path) -> dict[str, str | None]:
    return {m["mailbox"]: m["holder"] for m in _status(config)["mailboxes"]}


class Appender:
    """Local delivery into the four mailboxes, round robin, each mail its own customer and Message-ID."""

    def __init__(self, dovecot: DovecotServer, users: list[str]) -> None:
        self.dovecot, self.users = dovecot, users
        self.appended: Counter[str] = Counter()
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="appender", daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.15):
            user = self.users[n % len(self.users)]
            mid = f"<box-{n}@customer.example>"
            with self.dovecot.imap(user) as client:
                client.append("INBOX", make_mail(f"box {n}", sender=f"b{n} <b{n}@customer.example>", message_id=mid))
            self.appended[user] += 1
            self.ids.append(mid)
            n += 1

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        self._stop.set()
        self._thread.join(120)


def _taken_over(config: Path, mailboxes: set[str], lost_by: str, started: float) -> float:
    """Seconds until every mailbox ``lost_by`` held is held by another daemon."""
    wait_until(lambda: all(_holders(config).get(m) not in (None, lost_by) for m in mailboxes), timeout=120,
               what=f"the mailboxes of {lost_by} taken over")
    return round(time.monotonic() - started, 1)


def _both(daemons: list[Daemon], n: int) -> set[str]:
    """The same mail delivered to two daemons at once (an MTA retrying on a second MX): one ticket."""
    ids = set()
    for i in range(n):
        mid = f"<twice-{i}@customer.example>"
        raw = make_mail(f"twice {i}", sender=f"t{i} <t{i}@customer.example>", message_id=mid)
        answers: list[int] = []

        def deliver(d: Daemon, raw: bytes = raw, answers: list[int] = answers) -> None:
            answers.append(smtp_deliver(d.host, d.port, raw)[0])

        threads = [threading.Thread(target=deliver, args=(d,)) for d in daemons]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == [250, 250]
        ids.add(mid)
    return ids


@pytest.mark.timeout(900)
def test_three_daemons_survive_a_kill_and_a_pause_without_losing_or_doubling_anything(
    dovecot: DovecotServer, make_config: MakeConfig, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    configs = _configs(make_config, tmp_path, dovecot, smtp_sink)
    users = _users(configs[0])
    with Supervisor(tmp_path / "serve.log") as sup:
        daemons = [sup.start(config) for config in configs]
        wait_until(lambda: _status(configs[0])["alive"] == 3 and all(_holders(configs[0]).values()), timeout=120,
                   what="three daemons holding every mailbox")
        status = _status(configs[0])
        held = Counter(m["holder"] for m in status["mailboxes"])
        assert max(held.values()) <= 2, f"one daemon took more than its share: {held}"  # 4 mailboxes, 3 daemons
        twice = _both(daemons[:2], 3)  # dedupe across daemons, the database deciding between them

        mta = sup.track(Mta("127.0.0.1", 0, clients=3, feed=_paced(mail_factory("fo"), 0.3), timeout=5.0,
                            targets=[(d.host, d.port) for d in daemons]))
        appender = sup.track(Appender(dovecot, users))
        mta.start()
        appender.start()
        wait_until(lambda: len(mta.acked_set()) >= 20 and len(appender.ids) >= 20, timeout=120, what="the stream")

        holders = _holders(configs[0])
        k = max(range(3), key=lambda i: sum(1 for h in holders.values() if h == f"d{i}"))  # kill one that holds
        killed, rest = daemons[k], [i for i in range(3) if i != k]
        killed_boxes = {m for m, h in holders.items() if h == f"d{k}"}
        started = time.monotonic()
        killed.kill9()
        kill_takeover = _taken_over(configs[rest[0]], killed_boxes, f"d{k}", started)

        wait_until(lambda: _status(configs[rest[0]])["alive"] == 2, timeout=120, what="the dead daemon counted out")
        wait_until(lambda: all(Counter(_holders(configs[rest[0]]).values())[f"d{i}"] == 2 for i in rest),
                   timeout=120, what="two daemons sharing four mailboxes")
        p, s = rest
        paused, survivor = daemons[p], configs[s]
        paused_leases = {(m, int(t)) for m, t in sql_rows(
            survivor, f"SELECT mailbox, token FROM mailbox_lease WHERE holder = 'd{p}' AND expires > 0")}
        started = time.monotonic()
        signal_group(paused, signal.SIGSTOP)
        try:
            pause_takeover = _taken_over(survivor, {m for m, _ in paused_leases}, f"d{p}", started)
            time.sleep(LEASE)  # paused well past its lease, while mail keeps coming to the others
        finally:
            # marked while it is stopped: each line after the mark was written after it woke up (the log
            # is shared, but no other daemon was ever given the paused one's tokens)
            log_mark = len(paused.output())
            signal_group(paused, signal.SIGCONT)
        wait_until(lambda: len(mta.acked_set()) >= 60, timeout=120, what="the stream after the pause")
        appender.halt()
        last = daemons[s]
        mta.drain(log=last.output)
        for user in users:
            wait_until(lambda u=user: folder_count(dovecot, u, "INBOX") == 0, timeout=240,
                       what=f"mailbox of {user} drained", log=last.output)
        moved = {u: folder_count(dovecot, u, "Processed") for u in users}
        stored = set(mta.acked_set()) | set(appender.ids) | twice
        tickets = len(stored)
        wait_until(lambda: sql_rows(survivor, "SELECT count(*) FROM sla_timer WHERE fired_at IS NOT NULL")
                   == [(tickets * STEPS_PER_TICKET,)], timeout=300, what="every rung fired", log=last.output)
        wait_outbox_sent(survivor, timeout=300, log=last.output)
        after_pause = paused.output()[log_mark:]
        cluster = _status(survivor)
        for i in rest:
            assert daemons[i].stop() == 0

    intake = intake_check(survivor, stored)
    outgoing = outgoing_check(survivor, smtp_sink)
    reached = Counter(sql_rows(survivor, "SELECT ticket_id, detail FROM event WHERE kind = 'sla_escalation'"))
    breaches = Counter(sql_rows(survivor, "SELECT ticket_id, detail FROM event WHERE kind = 'sla_breach'"))
    stale_moves = [(m, t) for m, t in ACKNOWLEDGING.findall(after_pause) if (m, int(t)) in paused_leases]
    summary("failover/three-daemons", smtp=len(mta.acked_set()), imap=len(appender.ids), tickets=intake.tickets,
            kill_takeover_s=kill_takeover, pause_takeover_s=pause_takeover, lease_s=LEASE,
            duplicate_rows=intake.duplicate_rows, acks=outgoing.rows, duplicate_sends=outgoing.duplicate_sends,
            stale_moves=len(stale_moves))
    assert not intake.lost and not intake.doubled and not intake.ticket_doubled
    assert intake.tickets == tickets
    assert sum(moved.values()) == len(appender.ids) and moved == dict(appender.appended)
    assert not stale_moves, f"the paused daemon moved mail under a lease it had lost: {stale_moves}"
    assert "imap lease lost" in after_pause or "lease lost" in after_pause  # it noticed, and stepped back
    assert not {k: n for k, n in (reached + breaches).items() if n > 1}, "an SLA rung fired twice"
    assert not outgoing.never_delivered and outgoing.unsent == 0
    # the kill and the pause may each catch one mail on the wire, past its sender's last look at its claim
    assert outgoing.duplicate_sends <= 2, f"sent twice: {outgoing.worst}"
    assert kill_takeover <= 2 * LEASE + 5 and pause_takeover <= 2 * LEASE + 5
    assert {d["name"] for d in cluster["daemons"] if d["alive"]} == {f"d{i}" for i in rest}


def _paced(make: Any, seconds: float) -> Any:
    def paced() -> tuple[str, bytes]:
        time.sleep(seconds)
        return make()  # type: ignore[no-any-return]

    return paced


def signal_group(daemon: Daemon, sig: int) -> None:
    """To serve and its children at once (a frozen machine stops them all)."""
    import os

    os.killpg(daemon.proc.pid, sig)


def test_a_daemon_whose_secret_or_ticket_format_differs_refuses_to_join(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """A second daemon with its own secret would sign reply tokens the first rejects (the customer's
    answer becomes a stranger's mail), one with another subject tag would thread nothing: it says so
    and stops, before taking any mail, and the running daemon is undisturbed."""
    first = make_config(security={"secret_file": str(tmp_path / "secret-a")})
    settings = yaml.safe_load(first.read_text())
    with Supervisor(tmp_path / "serve.log") as sup:
        running = sup.start(first)
        wait_until(lambda: _status(first)["alive"] == 1, timeout=120, what="the first daemon registered")
        for change, named in (({"security": {"secret_file": str(tmp_path / "secret-b")}}, "security secret"),
                              ({"tickets": {"number_format": "########"}}, "tickets.number_format")):
            other = {**settings, **change, "state_dir": str(tmp_path / "state-b"),
                     "intake": {**settings["intake"], "smtp": {"listen": f"127.0.0.1:{free_port()}"}}}
            path = first.with_name("other.yaml")
            path.write_text(yaml.safe_dump(other, sort_keys=False))
            refused = run_cli(path, "serve", timeout=180)
            assert refused.code == 1, refused.stderr
            assert named in refused.stderr and "differs from daemon" in refused.stderr, refused.stderr
        assert running.alive()
        assert _status(first)["alive"] == 1  # the refused daemons left no live entry behind
        assert running.stop() == 0
