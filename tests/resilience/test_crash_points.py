"""``kill -9`` of ``serve`` and both its children at random moments of intake, sending and the SLA sweep.

Each scenario runs many short rounds on one config and one database: start serve, let work flow,
SIGKILL the whole process group at a seeded random moment, and start again. After the last round
serve runs until everything is done, then the invariants are checked over all rounds together:

- nothing that got a 250 (or was moved to the processed folder on IMAP) is lost;
- nothing is stored twice: one accepted inbound row and one ticket per Message-ID;
- the relay gets each outgoing mail at least once, and more than once at most as often as a kill hit
  a sender that had claimed rows (it sends one mail at a time: at most one mail on the wire per crash);
- no SLA rung fires twice.

20 rounds per scenario by default (``MAILGATE_CRASH_ROUNDS=N`` to choose, ``MAILGATE_SOAK=1`` for 100);
the seed is printed and ``MAILGATE_CRASH_SEED`` replays it. On a loaded 2-core machine each round
costs about as long as serve needs to start (3-5 s): roughly 1.5-2 minutes per scenario, 6-8 in all.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context, ingest
from tests.conftest import MakeConfig, SmtpSink, make_mail, sql_rows, wait_until
from tests.resilience.harness import (
    LEASE,
    Appender,
    Mta,
    Supervisor,
    folder_count,
    folder_ids,
    intake_check,
    mail_factory,
    outgoing_check,
    rounds,
    rows_sending,
    seeded,
    summary,
    timed,
    wait_outbox_sent,
)
from tests.support.dovecot_fixture import DovecotServer

ROUNDS = rounds()
ACCEPTED = "SELECT message_id FROM inbound WHERE status = 'accepted'"
PER_ROUND_TIMEOUT = 60  # seconds of pytest-timeout budget per round, far above what a round takes


def relay(sink: SmtpSink) -> dict[str, Any]:
    return {"transport": "smtp", "smtp": {"host": sink.host, "port": sink.port}, "lease": LEASE,
            "retry": {"first": "1s", "maximum": "2s"}}


# --------------------------------------------------------------------------- (a) SMTP intake
@pytest.mark.timeout(300 + ROUNDS * PER_ROUND_TIMEOUT)
def test_smtp_intake_survives_kill_9_of_serve_and_children(make_config: MakeConfig, tmp_path: Path) -> None:
    rng, seed = seeded("smtp intake")
    config = make_config(scheduler={"outbox_interval": "1s"})
    mta = Mta("127.0.0.1", 0, clients=3, feed=mail_factory("smtp"))
    kills = 0
    with Supervisor(tmp_path / "serve.log") as sup, timed() as elapsed:
        sup.track(mta)
        for n in range(ROUNDS):
            daemon = sup.start(config)
            daemon.children()
            before = len(mta.acked)
            mta.start(daemon.host, daemon.port)
            wait_growth(lambda: len(mta.acked), before, f"a 250 in round {n}", daemon.output)
            _pause(rng.uniform(0.0, 1.0))
            victims = daemon.kill9()
            assert len(victims) >= 3, f"serve and both children should have died, got {victims}"
            kills += 1
            mta.halt()
        daemon = sup.start(config)
        mta.start(daemon.host, daemon.port)
        mta.drain(log=daemon.output)
        acked = mta.acked_set()
        result = intake_check(config, acked)
        assert daemon.stop() == 0
        summary("crash/smtp-intake", rounds=ROUNDS, kills=kills, mails=len(mta.offered), acked=len(acked),
                lost=len(result.lost), doubled=len(result.doubled), redelivered=result.duplicate_rows,
                seconds=elapsed(), seed=seed)
    assert not result.lost, f"{len(result.lost)} acknowledged mails lost, e.g. {sorted(result.lost)[:5]} (seed {seed})"
    assert not result.doubled, f"stored twice: {list(result.doubled.items())[:5]} (seed {seed})"
    assert not result.ticket_doubled, f"two tickets for one mail: {list(result.ticket_doubled.items())[:5]}"
    assert result.tickets == len(acked) == len(result.accepted), (result.tickets, len(acked), len(result.accepted))


# --------------------------------------------------------------------------- (b) IMAP intake with MOVE
@pytest.mark.timeout(300 + ROUNDS * PER_ROUND_TIMEOUT)
def test_imap_intake_with_move_survives_kill_9(
    dovecot: DovecotServer, make_config: MakeConfig, tmp_path: Path
) -> None:
    rng, seed = seeded("imap intake")
    user, password = dovecot.add_user()
    box = {"name": "support", "host": dovecot.host, "port": dovecot.imap_port, "security": "plain",
           "username": user, "password": password, "processed_folder": "Processed", "poll_interval": "2s"}
    config = make_config(intake={"imap": [box]})
    appender = Appender(dovecot, user)
    kills = 0
    moved_but_missing: set[str] = set()
    with Supervisor(tmp_path / "serve.log") as sup, timed() as elapsed:
        sup.track(appender)
        for n in range(ROUNDS):
            daemon = sup.start(config)
            daemon.children()
            moved_count = lambda: folder_count(dovecot, user, "Processed")  # noqa: E731
            before = moved_count()
            appender.start()
            wait_growth(moved_count, before, f"a mail moved in round {n}", daemon.output)
            _pause(rng.uniform(0.0, 1.0))
            assert len(daemon.kill9()) >= 3
            kills += 1
            appender.halt()
            moved = set(folder_ids(dovecot, user, "Processed"))  # acknowledged to the server ...
            stored = {mid for (mid,) in sql_rows(config, ACCEPTED)}
            moved_but_missing |= moved - stored  # ... so it must have been committed before
        daemon = sup.start(config)
        total = len(appender.appended)
        wait_until(lambda: folder_count(dovecot, user, "Processed") >= total, timeout=240,
                   what=f"all {total} mails moved", log=daemon.output)
        assert daemon.stop() == 0
        processed = folder_ids(dovecot, user, "Processed")
        inbox = folder_ids(dovecot, user, "INBOX")
        result = intake_check(config, set(appender.appended))
        summary("crash/imap-move", rounds=ROUNDS, kills=kills, mails=total, moved=len(processed),
                lost=len(result.lost), doubled=len(result.doubled), refetched=result.duplicate_rows,
                seconds=elapsed(), seed=seed)
    assert not moved_but_missing, f"moved to Processed but not stored: {sorted(moved_but_missing)[:5]} (seed {seed})"
    assert Counter(processed) == Counter(appender.appended) and not inbox, "every mail moved exactly once"
    assert not result.lost, f"{len(result.lost)} mails lost, e.g. {sorted(result.lost)[:5]} (seed {seed})"
    assert not result.doubled, f"stored twice: {list(result.doubled.items())[:5]} (seed {seed})"
    assert not result.ticket_doubled, f"two tickets for one mail: {list(result.ticket_doubled.items())[:5]}"
    assert result.tickets == total


# --------------------------------------------------------------------------- (c) outbox sending
ACKS_PER_ROUND = 25


def queue_acks(ctx: Context, first: int, count: int) -> None:
    """New tickets written straight into the database while serve is down: their acks wait in the outbox."""
    for n in range(first, first + count):
        raw = make_mail(f"outbox {n}", sender=f"o{n}@customer.example", message_id=f"<outbox-{n}@customer.example>")
        ingest(raw, Envelope(f"o{n}@customer.example", ("support@example.com",), "pipe", ctx.clock.now()), ctx)


@pytest.mark.timeout(300 + ROUNDS * PER_ROUND_TIMEOUT)
def test_outbox_sending_survives_kill_9_with_at_most_one_resend_per_crash(
    make_config: MakeConfig, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    rng, seed = seeded("outbox sending")
    config = make_config(outbound=relay(smtp_sink), notifications={"kinds": {"alert_new": False}})
    ctx = build_context(load_config(config))
    ctx.db.upgrade()
    kills = kills_while_sending = 0
    try:
        with Supervisor(tmp_path / "serve.log") as sup, timed() as elapsed:
            for n in range(ROUNDS):
                queue_acks(ctx, n * ACKS_PER_ROUND, ACKS_PER_ROUND)
                before = len(smtp_sink.messages)
                threshold = rng.randint(1, ACKS_PER_ROUND - 1)  # the kill lands after this many of the round's sends
                daemon = sup.start(config)
                wait_growth(lambda: len(smtp_sink.messages), before + threshold - 1,
                            f"{threshold} mails at the relay in round {n}", daemon.output)
                _pause(rng.uniform(0.0, 0.05))
                assert len(daemon.kill9()) >= 3
                kills += 1
                kills_while_sending += rows_sending(config) > 0
            daemon = sup.start(config)
            wait_outbox_sent(config, log=daemon.output)
            assert daemon.stop() == 0
            result = outgoing_check(config, smtp_sink)
            summary("crash/outbox-send", rounds=ROUNDS, kills=kills, kills_while_sending=kills_while_sending,
                    mails=result.rows, lost=len(result.never_delivered), duplicate_sends=result.duplicate_sends,
                    worst=result.worst, seconds=elapsed(), seed=seed)
    finally:
        ctx.db.dispose()
    assert result.rows == ROUNDS * ACKS_PER_ROUND and result.unsent == 0
    assert not result.never_delivered, f"never reached the relay: {result.never_delivered[:5]} (seed {seed})"
    assert result.duplicate_sends <= kills_while_sending, (
        f"{result.duplicate_sends} mails sent twice after {kills_while_sending} kills of a sending sender "
        f"(at most one mail is on the wire per crash); most repeated: {result.worst} (seed {seed})")


# --------------------------------------------------------------------------- (d) the SLA sweep
TINY_SLA = {
    "schedules": {},
    "sla_plans": {"tiny": {"first_response": "2s", "resolution": "5s", "schedule": "24x7", "escalations": [
        {"at": "50%", "notify": ["assignee"]}, {"at": "100%", "notify": ["manager"], "overdue": True}]}},
}
TINY_RULES = {"help_topics": [{"name": "General", "department": "Support", "priority": "normal", "sla": "tiny"}],
              "default_help_topic": "General", "rules": []}
STEPS_PER_TICKET = 4  # 50 % and 100 % of first response and of resolution


@pytest.mark.timeout(300 + ROUNDS * PER_ROUND_TIMEOUT)
def test_sla_sweep_survives_kill_9_without_double_escalations(
    make_config: MakeConfig, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    rng, seed = seeded("sla sweep")
    config = make_config(sla=TINY_SLA, rules=TINY_RULES, outbound=relay(smtp_sink),
                         scheduler={"outbox_interval": "1s", "sla_interval": "0.5s"})
    mta = Mta("127.0.0.1", 0, clients=1)
    new_mail = mail_factory("sla")
    kills = kills_while_sending = 0
    with Supervisor(tmp_path / "serve.log") as sup, timed() as elapsed:
        sup.track(mta)
        for _round in range(ROUNDS):
            daemon = sup.start(config)
            for _ in range(3):  # tickets whose rungs come due over this round and the next
                mta.add(*new_mail())
            mta.start(daemon.host, daemon.port)
            _pause(rng.uniform(0.2, 2.5))
            assert len(daemon.kill9()) >= 3
            kills += 1
            kills_while_sending += rows_sending(config) > 0
            mta.halt()
        daemon = sup.start(config)
        mta.start(daemon.host, daemon.port)
        mta.drain(log=daemon.output)
        tickets = len(mta.acked_set())
        wait_until(lambda: sql_rows(config, "SELECT count(*) FROM sla_timer WHERE fired_at IS NOT NULL")
                   == [(tickets * STEPS_PER_TICKET,)], timeout=240, what="every rung fired", log=daemon.output)
        wait_outbox_sent(config, log=daemon.output)
        assert daemon.stop() == 0
        reached = Counter((ticket, detail.partition(" reached")[0]) for ticket, detail in sql_rows(
            config, "SELECT ticket_id, detail FROM event WHERE kind = 'sla_escalation'") if " reached " in detail)
        breaches = Counter(sql_rows(config, "SELECT ticket_id, detail FROM event WHERE kind = 'sla_breach'"))
        outbox = sql_rows(config, "SELECT message_id, kind FROM outbox")
        sla_rows = {mid for mid, kind in outbox if kind.startswith("sla_")}
        intake = intake_check(config, mta.acked_set())
        result = outgoing_check(config, smtp_sink)
        doubled = {key: count for key, count in (reached + breaches).items() if count > 1}
        summary("crash/sla-sweep", rounds=ROUNDS, kills=kills, kills_while_sending=kills_while_sending,
                tickets=tickets, rungs=sum(reached.values()), sla_mails=len(sla_rows), double_escalations=len(doubled),
                lost=len(intake.lost) + len(result.never_delivered), duplicate_sends=result.duplicate_sends,
                seconds=elapsed(), seed=seed)
    assert not doubled, f"escalated twice: {list(doubled.items())[:5]} (seed {seed})"
    assert sum(reached.values()) == tickets * STEPS_PER_TICKET
    assert sla_rows, "no escalation mail was queued: the scenario did not exercise the sweep"
    assert not intake.lost and not intake.doubled and intake.tickets == tickets
    assert not result.never_delivered and result.unsent == 0
    assert result.duplicate_sends <= kills_while_sending, (
        f"{result.duplicate_sends} mails sent twice after {kills_while_sending} kills of a sending sender; "
        f"most repeated: {result.worst} (seed {seed})")


def wait_growth(count: Callable[[], int], before: int, what: str, log: Callable[[], str]) -> None:
    wait_until(lambda: count() > before, timeout=120, what=what, log=log)


def _pause(seconds: float) -> None:
    """The random kill moment itself: the only deliberate sleep in this suite."""
    time.sleep(seconds)
