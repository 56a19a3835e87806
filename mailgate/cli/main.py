"""Command line: parse arguments, call one function, map exceptions to exit codes. No business logic.

Exit codes: 0 done; 1 configuration or usage problem; 65 (EX_DATAERR)
rejected by policy; 75 (EX_TEMPFAIL) could not store now, try later.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from mailgate import __version__, logformat
from mailgate.errors import ConfigError, MailgateError, Rejected, TempFail
from mailgate.logformat import log_event

EX_OK, EX_CONFIG, EX_DATAERR, EX_TEMPFAIL = 0, 1, 65, 75
DEFAULT_CONFIG = "config/mailgate.yaml"
# domain.Status's values, written out so that parsing a command line need not import the domain model
# (a piped mail's ingest pays every import); tests/unit/test_cli_statuses.py keeps the two equal.
STATUSES = ("open", "in_progress", "awaiting_reply", "resolved", "closed")
PRIORITIES = ("low", "normal", "high", "emergency")
STAFF_CHANNELS = ("phone", "in_person", "chat", "letter", "other")  # pipeline.submission.STAFF_CHANNELS


def _ctx(args: argparse.Namespace, *, migrate: bool = True, check: bool = True) -> Any:
    """``check=False``: templates are rendered when a mail needs them, not all of them first."""
    from mailgate.config import load_config
    from mailgate.daemon.context import build_context

    ctx = build_context(load_config(args.config), check=check)
    if migrate:
        ctx.db.ensure_current()  # one query when current; Alembic only when behind
    return ctx


def _database(args: argparse.Namespace) -> Any:
    """For read-only views: only mailgate.yaml's database, used as it is (never migrated or created), so
    looking at tickets neither writes nor waits for a side file an admin is fixing, and starts fast."""
    from mailgate.storage.db import Database

    db = Database(_database_url(args), create=False)
    db.require_current()
    return db


def _database_url(args: argparse.Namespace) -> str:
    """mailgate.yaml's database without loading the configuration models (a fifth of a second); the
    full loader only when the file is not plain enough, to say what is wrong with it."""
    from mailgate.paths import database_url

    found = database_url(args.config)
    if found is None:
        from mailgate.config import load_database_url

        found = load_database_url(args.config)
    return found


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from mailgate.config import load_config
    from mailgate.daemon import metrics_http

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    if config.main.metrics is not None:  # before serve's modules import prometheus_client (and spawn children)
        metrics_http.prepare(config.main.state_dir)

    from mailgate.daemon.service import serve

    logformat.configure("logfmt", "info")  # until the configuration, which may say otherwise, is read
    log = logging.getLogger("mailgate.serve")
    try:
        return asyncio.run(serve(Path(args.config)))
    except ConfigError as exc:
        for problem in exc.problems:
            log_event(log, "start failed", logging.ERROR, problem=problem)
        return EX_CONFIG
    except TempFail as exc:  # the database cannot be reached: a service manager may try again later
        log_event(log, "start failed", logging.ERROR, problem=str(exc))
        return EX_TEMPFAIL
    except (MailgateError, OSError) as exc:
        log_event(log, "start failed", logging.ERROR, problem=str(exc))
        return EX_CONFIG


def cmd_ingest(args: argparse.Namespace) -> int:
    if args.number_from is not None and not args.history:
        print("--number-from goes with --history (it names the tickets an archive imports)", file=sys.stderr)
        return EX_CONFIG
    if not args.history and not args.direct:  # serve running: it stores the mail (a tenth of the cost)
        from mailgate.cli.handoff import hand_over

        code = hand_over(args)
        if code is not None:
            return code
    from mailgate.cli.ingest_report import IngestReport
    from mailgate.intake import pipe

    try:
        ctx = _ctx(args, check=args.history)
    except ConfigError as exc:  # an MTA bounces on any other code: keep the mail queued until this is fixed
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("temporary failure: the configuration must be fixed; the mail stays with its sender", file=sys.stderr)
        return EX_TEMPFAIL
    if args.history:
        return _ingest_history(args, ctx)
    report = IngestReport(quiet=args.quiet)
    for result in pipe.run(args.files, ctx, sender=args.sender, recipient=args.recipient):
        if isinstance(result.error, TempFail):
            report.tempfail(result.source, str(result.error))
        elif isinstance(result.error, Rejected):
            report.rejected(result.source, result.error.reason)
        elif result.outcome is not None:
            report.stored(result.source, result.outcome.status, result.outcome.number, result.outcome.reason)
    return report.finish()


def _ingest_history(args: argparse.Namespace, ctx: Any) -> int:
    from mailgate.intake.history import Tally, import_history, summary

    if args.files == ["-"]:
        print("--history reads files, mboxes or Maildirs, not stdin", file=sys.stderr)
        return EX_CONFIG
    if args.number_from is not None:
        known = ctx.config.main.tickets.foreign_tags
        if args.number_from not in known:
            names = ", ".join(sorted(known)) or "none configured"
            print(f"--number-from {args.number_from}: not a tag of tickets.foreign_tags ({names})", file=sys.stderr)
            return EX_CONFIG
        ctx = dataclasses.replace(ctx, number_from=args.number_from)
    started = time.monotonic()
    live = sys.stderr.isatty() and not args.quiet

    def progress(tally: Tally) -> None:
        if live:
            rate = tally.total / max(time.monotonic() - started, 1e-9)
            print(f"\r{tally.total} mail(s), {len(tally.tickets)} ticket(s), {rate:.0f}/s ", end="", file=sys.stderr)

    tally = import_history(args.files, ctx, progress)
    if live:
        print(file=sys.stderr)
    for problem in tally.problems:
        print(problem, file=sys.stderr)
    if not args.quiet:
        print(summary(tally, time.monotonic() - started), file=sys.stderr)
    return EX_TEMPFAIL if tally.counts["tempfail"] or tally.counts["unreadable"] else EX_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from mailgate.config import load_config
    from mailgate.daemon.context import build_context

    config = load_config(args.config)
    ctx = build_context(config)  # templates rendered against a sample, secret readable
    ctx.db.check()  # and the database answers, under that name, to that user
    print(f"{config.path}: OK (database {ctx.db.where()} answers)")
    return EX_OK


def cmd_init(args: argparse.Namespace) -> int:
    from mailgate.cli.init import write_starter

    addresses = [a.strip().lower() for a in args.address] or ["support@example.com"]
    for line in write_starter(Path(args.dir), Path(args.state_dir), addresses, args.listen, force=args.force):
        print(line)
    return EX_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    _ctx(args)
    print("database is at the latest schema")
    return EX_OK


def cmd_tickets(args: argparse.Namespace) -> int:
    if args.tickets_command == "list":
        return _list_tickets(args)
    if args.tickets_command == "open":
        from mailgate.cli.open_ticket import run

        return run(args, _ctx(args, check=False))
    from mailgate.cli.views import ticket_json, ticket_text
    from mailgate.storage.store import Store

    with _database(args).reader() as session:
        store = Store(session)
        number = args.number.strip().lstrip("#").strip()  # '#123456' as the subject tag shows it
        ticket = store.ticket_by_number(number) or store.ticket_by_number(number.upper())
        if ticket is None:
            print(f"no ticket {args.number}", file=sys.stderr)
            return EX_CONFIG
        if args.json:
            _print_json(ticket_json(ticket, store, messages=True))
        else:
            print(ticket_text(ticket, store))
    return EX_OK


def _list_tickets(args: argparse.Namespace) -> int:
    """A page of tickets (text: 50 unless --limit/--all; JSON: all unless --limit), oldest first."""
    from mailgate.cli.quick import FILTERS, Page, ticket_rows

    where = {column: getattr(args, option).strip().lower() if option in ("assignee", "requester")
             else getattr(args, option) for option, column in FILTERS.items() if getattr(args, option)}
    limit = args.limit if args.limit is not None else (None if args.all or args.json else 50)
    page = Page(where, limit, args.offset)
    if args.json:  # the JSON contract (collaborators, dates...): the models, for the page asked for
        from mailgate.cli.views import ticket_json
        from mailgate.storage.store import Store

        with _database(args).reader() as session:
            store = Store(session)
            tickets = store.tickets(limit=page.limit, where=page.where, offset=page.offset)
            _print_json([ticket_json(t, store, messages=False) for t in tickets])
        return EX_OK
    listing = ticket_rows(_database_url(args), page)  # the listing typed all day: the driver alone
    rows = listing.rows
    if not rows:
        asked = ", ".join(f"{option} {getattr(args, option)}" for option in FILTERS if getattr(args, option))
        print("no tickets" + (f" with {asked}" if asked else "") + (" on this page" if args.offset else ""),
              file=sys.stderr)
        return EX_OK
    width = max(len("NUMBER"), *(len(number) for number, *_ in rows))
    print(f"{'NUMBER':<{width}}  {'STATUS':<15} {'PRIORITY':<9} {'REQUESTER':<30} SUBJECT")
    for number, state, priority, requester, subject in rows:
        print(f"{number:<{width}}  {state:<15} {priority:<9} {requester:<30} {subject}")
    if listing.total > args.offset + len(rows):  # on stderr: a script reading the listing is not disturbed
        print(f"showing {args.offset + 1}-{args.offset + len(rows)} of {listing.total}; "
              f"--offset {args.offset + len(rows)} for the next page, --all for every ticket", file=sys.stderr)
    return EX_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from mailgate.cli import explain

    with _database(args).reader() as session:
        try:
            kind, rows = explain.find(session, args.key)
        except explain.NotFound as exc:
            print(str(exc), file=sys.stderr)
            return EX_CONFIG
        records = [explain.explain(session, row) for row in rows]
        for record, row in zip(records, rows, strict=True):
            if "rules" in record:
                record["rules"]["trace_now"] = explain.retrace(session, row, args.config)
    if args.json:
        _print_json(records if kind != "id" else records[0])
    elif not records:
        print(f"ticket {args.key}: no received mail (opened another way)")
    else:
        print("\n\n".join(explain.render(r) for r in records))
    return EX_OK


def cmd_quarantine(args: argparse.Namespace) -> int:
    from mailgate.cli import quarantine

    if args.quarantine_command == "list":
        rows = quarantine.listing(_database(args), args.held)
        if args.json:
            _print_json(rows)
        for row in [] if args.json else rows:
            print(f"#{row['id']:<6} {row['received_at']}  {row['mail_from'] or '-':<30} {row['reason']}")
        return EX_OK
    if args.quarantine_command == "show":
        raw = quarantine.raw(_database(args), args.id)
        sys.stdout.buffer.write(raw)
        return EX_OK
    outcomes = quarantine.reprocess(_ctx(args), args.ids)
    for inbound_id, outcome in outcomes:
        if isinstance(outcome, str):
            print(f"#{inbound_id}: {outcome}")
            continue
        print(
            f"#{inbound_id}: {outcome.status}"
            + (f" ticket {outcome.number}" if outcome.number else "")
            + (f" ({outcome.reason})" if outcome.reason else "")
        )
    if not outcomes:
        print("nothing to replay: no mail is quarantined")
    return EX_CONFIG if any(o == "no such id" for _, o in outcomes) else EX_OK


def cmd_outbox(args: argparse.Namespace) -> int:
    from mailgate.cli.views import outbox_json
    from mailgate.storage.store import Store

    if args.outbox_command == "list":
        # a listing on screen is cut (and says so); JSON for scripts is whole unless a limit is asked for
        limit = None if args.all or (args.json and args.limit is None) else (args.limit or 50)
        with _database(args).reader() as session:
            store = Store(session)
            rows = [outbox_json(r) for r in store.outbox_rows(status=args.status, limit=limit)]
            total = store.outbox_count(args.status) if limit is not None and len(rows) >= limit else len(rows)
        if args.json:
            _print_json(rows)
        for r in [] if args.json else rows:
            print(
                f"#{r['id']:<6} {r['status']:<8} {r['attempts']:>3}  {','.join(r['to']):<30} {r['subject']}"
                + (f"  [{r['last_error']}]" if r["last_error"] else "")
            )
        if total > len(rows):  # on stderr: a script reading the listing (or the JSON) is not disturbed
            print(f"showing the newest {len(rows)} of {total}; --limit N or --all for more", file=sys.stderr)
        return EX_OK
    ctx = _ctx(args)
    with ctx.db.transaction() as session:
        count = Store(session).requeue_outbox(args.ids, ctx.clock.now())
    print(f"{count} message(s) queued for delivery")
    return EX_OK


def cmd_imap_check(args: argparse.Namespace) -> int:
    from mailgate.config import load_config
    from mailgate.intake.imap_session import check_mailbox, describe

    mailboxes = load_config(args.config).main.intake.imap
    if not mailboxes:
        if args.json:
            _print_json([])
        else:
            print("no IMAP mailboxes configured (intake.imap)")
        return EX_OK
    reports: list[dict[str, Any]] = []
    for mb in mailboxes:
        try:
            report = check_mailbox(mb)
        except Exception as exc:  # every failure is reported, then the next mailbox is checked
            report = {"name": mb.name, "server": f"{mb.host}:{mb.port}", "problems": [describe(mb, exc)]}
        report["ok"] = not report["problems"]
        reports.append(report)
        if args.json:
            continue
        if not report["ok"]:
            print(f"{mb.name}: FAILED ({report['server']}): {'; '.join(report['problems'])}")
            continue
        mode = "IDLE" if report["mode"] == "idle" else "polling"
        print(f"{mb.name}: OK {mb.username}@{report['server']} ({mb.security}), {mode}, "
              f"{'MOVE' if report['move'] else 'COPY+EXPUNGE'}")  # fmt: skip
        print(f"  capabilities: {' '.join(report['capabilities'])}")
        print(f"  folders (separator {report['separator']!r}): {', '.join(report['folders_on_server'])}")
        for name, f in report["folders"].items():
            counts = f"{f.get('messages')} messages, {f.get('unseen')} unseen"
            ids = f"UIDVALIDITY {f.get('uidvalidity')}, UIDNEXT {f.get('uidnext')}"
            state = f"{counts}, {ids}" if f["exists"] else "missing (created at the first move)"
            print(f"  {name} ({f['role']}): {state}")
    if args.json:
        _print_json(reports)
    return EX_OK if all(r["ok"] for r in reports) else EX_CONFIG


def _count(value: str) -> int:
    """A whole number, 0 or more: argparse says so in its usage line otherwise."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value}")
    return number


def _date(value: str) -> datetime:
    """An ISO date or datetime; a date alone means midnight UTC."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_report(args: argparse.Namespace) -> int:
    from mailgate.cli import report

    started = time.monotonic()
    rows = report.build(_database(args), args.since, args.until, datetime.now(UTC))
    if args.format == "json":
        _print_json(report.as_json(rows))
    elif args.format == "csv":
        sys.stdout.write(report.as_csv(rows))
    else:
        print(report.as_table(rows))
    if not args.quiet:  # on stderr: the report itself stays clean for scripts
        seconds = time.monotonic() - started
        print(f"{rows[0].tickets} ticket(s) in {seconds:.1f} s ({rows[0].tickets / max(seconds, 1e-9):.0f}/s)",
              file=sys.stderr)
    return EX_OK


def cmd_status(args: argparse.Namespace) -> int:
    from mailgate.cli import status
    from mailgate.config import load_config

    config = load_config(args.config)
    data = status.gather(
        _database(args),
        [mb.name for mb in config.main.intake.imap],
        config.main.cluster.lease_time.total_seconds(),
        datetime.now(UTC),
    )
    if args.json:
        _print_json(data)
    else:
        print("\n".join(status.render(data)))
    return EX_OK


def cmd_sla_due(args: argparse.Namespace) -> int:
    from mailgate.jobs.sla_sweep import due

    ctx = _ctx(args, migrate=False)
    ctx.db.require_current()
    steps = due(ctx, args.at or ctx.clock.now())
    if args.json:
        _print_json(
            [
                {
                    "number": s.number,
                    "target": s.target,
                    "step": f"{s.step}%",
                    "due_at": s.due_at.isoformat(),
                    "plan": s.plan,
                    "actions": list(s.actions),
                    "holidays": [{"date": day.isoformat(), "name": name} for day, name in s.holidays],
                }
                for s in steps
            ]
        )
    for s in [] if args.json else steps:
        moved = "; ".join(f"{day.isoformat()} {name}" for day, name in s.holidays)
        print(f"{s.number}  {s.due_at.isoformat()}  {s.target:<15} {s.step:>4}%  {s.plan}: {'; '.join(s.actions)}"
              + (f"  (moved over holidays: {moved})" if moved else ""))
    return EX_OK


def cmd_rules_test(args: argparse.Namespace) -> int:
    from mailgate.cli.dryrun import explain, render_text

    report = explain(_ctx(args), Path(args.file).read_bytes(), args.to)
    if args.json:
        _print_json(report)
    else:
        print(render_text(report))
    return EX_OK


def cmd_retention_run(args: argparse.Namespace) -> int:
    from mailgate.cli.privacy import retention_text
    from mailgate.jobs.retention import run

    report = run(_ctx(args), dry_run=args.dry_run)
    if args.json:
        _print_json(report.as_json())
    else:
        print(retention_text(report))
    return EX_OK


def cmd_forget(args: argparse.Namespace) -> int:
    from mailgate.cli.privacy import forget_text
    from mailgate.jobs.forget import forget

    report = forget(_ctx(args), args.address, agent=args.agent, dry_run=args.dry_run)
    if args.json:
        _print_json(report.as_json())
    else:
        print(forget_text(args.address, report))
    return EX_CONFIG if report.refused else EX_OK


def cmd_api_key_new(args: argparse.Namespace) -> int:
    from mailgate.cli.api_keys import run

    return run(args)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error names what may be typed and where help is."""

    def error(self, message: str) -> NoReturn:
        commands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if commands is not None and "COMMAND" in message:
            message += f" (one of: {', '.join(commands.choices)})"
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\nTry '{self.prog} --help' for more.\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        help=f"config file (default ${{MAILGATE_CONFIG}} or {DEFAULT_CONFIG})",
    )
    parser = _Parser(prog="mailgate", parents=[common], description="Email-driven help-desk daemon.")
    parser.add_argument("--version", action="version", version=f"mailgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    add("serve", cmd_serve, "run listeners, pollers, scheduler and sender")
    p = add("ingest", cmd_ingest, "store RFC 5322 messages from files, stdin (-), an mbox or a Maildir")
    p.add_argument("files", nargs="*", default=["-"], help="mail files, mboxes or Maildirs; - is stdin (default)")
    p.add_argument("--sender", help="envelope sender (default $SENDER)")
    p.add_argument("--recipient", help="envelope recipient (default $ORIGINAL_RECIPIENT or $RECIPIENT)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--history", action="store_true",
                   help="import an archive as history: original dates, threaded, no mail sent, tickets closed")
    p.add_argument("--direct", action="store_true",
                   help="store in this process even when serve is running (default: hand the mail to serve)")
    p.add_argument("--number-from", metavar="NAME",
                   help="with --history: a new ticket keeps the number of the tickets.foreign_tags NAME tag in its "
                        "subject, and later mail with that tag threads to it")
    add("status", cmd_status, "daemons alive, who reads which mailbox, outbox depth, SLA sweep lag").add_argument(
        "--json", action="store_true", help="one JSON object"
    )
    add("check-config", cmd_check_config, "validate the configuration; exit 1 with file:line messages")
    p = add("init", cmd_init, "write a starter configuration to DIR (absolute paths, packaged templates)")
    p.add_argument("dir", metavar="DIR", help="where to write it, e.g. /etc/mailgate")
    p.add_argument("--state-dir", default="/var/lib/mailgate", help="serve's state (default /var/lib/mailgate)")
    p.add_argument("--address", action="append", default=[], help="a support address (repeat for more)")
    p.add_argument("--listen", default="127.0.0.1:2525", help="SMTP listener HOST:PORT (default 127.0.0.1:2525)")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    db = add("db", lambda a: EX_CONFIG, "database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_sub.add_parser("upgrade", parents=[common], help="apply migrations").set_defaults(func=cmd_db_upgrade)

    sla = add("sla", lambda a: EX_CONFIG, "SLA timers")
    s_sub = sla.add_subparsers(dest="sla_command", required=True, metavar="COMMAND")
    p = s_sub.add_parser("due", parents=[common], help="what the SLA sweep would fire at TIME (default now)")
    p.add_argument("--at", type=_date, help="ISO date or datetime (default now)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.set_defaults(func=cmd_sla_due)

    tickets = add("tickets", cmd_tickets, "look at tickets")
    t_sub = tickets.add_subparsers(dest="tickets_command", required=True, metavar="COMMAND")
    p = t_sub.add_parser("list", parents=[common], help="list tickets, oldest first, a page at a time")
    p.add_argument("--status", choices=STATUSES, help="only tickets in this status")
    p.add_argument("--topic", help="only tickets of this help topic")
    p.add_argument("--assignee", metavar="EMAIL", help="only tickets assigned to this agent")
    p.add_argument("--requester", metavar="EMAIL", help="only tickets this customer opened")
    p.add_argument("--limit", type=_count, help="at most this many (default 50; with --json: all)")
    p.add_argument("--offset", type=_count, default=0, help="skip this many first (the next page)")
    p.add_argument("--all", action="store_true", help="every ticket that matches")
    p.add_argument("--json", action="store_true", help="JSON for scripts (contract: DESIGN.md)")
    p = t_sub.add_parser("show", parents=[common], help="show one ticket with its messages")
    p.add_argument("number", help="the ticket number, with or without the # of the subject tag")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p = t_sub.add_parser("open", parents=[common], help="enter a ticket that came by phone, in person or by letter",
                         description="enter a ticket for a customer; the text from stdin, --text, or $EDITOR")
    p.add_argument("--requester", required=True, metavar='"NAME <EMAIL>"', help="the customer the ticket is for")
    p.add_argument("--subject", required=True, help="the ticket's subject, as a mail's would be")
    p.add_argument("--agent", required=True, metavar="EMAIL", help="you: the agent entering it (agents.yaml)")
    p.add_argument("--channel", default="phone", choices=STAFF_CHANNELS, help="how it reached you (default phone)")
    p.add_argument("--priority", choices=PRIORITIES, help="instead of what the rules would choose")
    p.add_argument("--topic", metavar="HELP_TOPIC", help="the help topic, instead of what the rules would choose")
    p.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", help="a custom field (repeatable)")
    p.add_argument("--attach", action="append", default=[], metavar="FILE", help="attach a file (repeatable)")
    p.add_argument("--text", help="the text itself, instead of stdin or $EDITOR")
    p.add_argument("--no-ack", action="store_true", help="do not send the customer the acknowledgment")
    p.add_argument("--json", action="store_true", help="print {status, number, reason, message_id}")

    p = add("explain", cmd_explain, "what happened to a received mail, and why (from the record kept at intake)")
    p.add_argument("key", metavar="ID|MESSAGE-ID|TICKET",
                   help="a received mail's id (id:42), its Message-ID, or a ticket number (all its mails)")
    p.add_argument("--json", action="store_true", help="the record as JSON (a list for a ticket or Message-ID)")

    quarantine = add("quarantine", cmd_quarantine, "look at and replay mail that could not be processed")
    q_sub = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="COMMAND")
    p = q_sub.add_parser("list", parents=[common], help="quarantined mail with the reason")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    held = p.add_mutually_exclusive_group()
    held.add_argument("--spam", dest="held", action="store_const", const="spam",
                      help="only mail held by a trusted relay's spam verdict (intake.spam)")
    held.add_argument("--flood", dest="held", action="store_const", const="flood",
                      help="only mail held by flood control (intake.flood)")
    q_sub.add_parser("show", parents=[common], help="print a kept mail's bytes").add_argument(
        "id", type=int, help="the id from quarantine list")
    q_sub.add_parser("reprocess", parents=[common], help="replay kept mail through the pipeline").add_argument(
        "ids", type=int, nargs="*",
        help="ids from quarantine list (default: every quarantined mail but held spam and flood, which an id releases)")

    out = add("outbox", cmd_outbox, "look at and re-queue outgoing mail")
    o_sub = out.add_subparsers(dest="outbox_command", required=True, metavar="COMMAND")
    p = o_sub.add_parser("list", parents=[common], help="outgoing mail, newest first, with its delivery state")
    p.add_argument("--status", choices=["pending", "sending", "sent", "failed"], help="only rows in this state")
    p.add_argument("--limit", type=_count, help="at most this many rows (default 50; with --json: all)")
    p.add_argument("--all", action="store_true", help="every row")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    o_sub.add_parser("retry", parents=[common], help="send failed or pending mail again now").add_argument(
        "ids", type=int, nargs="*", help="outbox ids (default: every failed or pending row)")

    imap = add("imap", lambda a: EX_CONFIG, "IMAP mailboxes")
    i_sub = imap.add_subparsers(dest="imap_command", required=True, metavar="COMMAND")
    p = i_sub.add_parser("check", parents=[common], help="log in to each mailbox; show folders, capabilities, counts")
    p.set_defaults(func=cmd_imap_check)
    p.add_argument("--json", action="store_true", help="JSON for scripts (a list, empty when none is configured)")

    p = add("report", cmd_report, "volume, response and resolution times, SLA compliance by group")
    p.add_argument("--since", type=_date, help="tickets created on or after (ISO date or datetime)")
    p.add_argument("--until", type=_date, help="tickets created before (ISO date or datetime)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output form (default table)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")

    retention = add("retention", lambda a: EX_CONFIG, "purge old raw mail, attachments and tickets (retention:)")
    ret_sub = retention.add_subparsers(dest="retention_command", required=True, metavar="COMMAND")
    p = ret_sub.add_parser("run", parents=[common], help="run the retention job now and say what it did")
    p.add_argument("--dry-run", action="store_true", help="say what it would do; change nothing")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.set_defaults(func=cmd_retention_run)
    p = add("forget", cmd_forget, "erase one person's address, name, words and mail on request")
    p.add_argument("address", metavar="ADDRESS", help="their address (any case; its +tag forms are erased too)")
    p.add_argument("--agent", action="store_true", help="allow erasing an agent's address (their replies stay)")
    p.add_argument("--dry-run", action="store_true", help="say what it would do; change nothing")
    p.add_argument("--json", action="store_true", help="JSON for scripts")

    api_key = add("api-key", lambda a: EX_CONFIG, "keys of the HTTP API (http.api_keys)")
    k_sub = api_key.add_subparsers(dest="api_key_command", required=True, metavar="COMMAND")
    p = k_sub.add_parser("new", parents=[common], help="make a key: print it once, with the lines for mailgate.yaml")
    p.add_argument("name", metavar="NAME", help="the client's name (letters, digits, '_', '.', '-')")
    p.add_argument("--scopes", help="comma-separated: create, read, agent (default create,read; agent with --agent)")
    p.add_argument("--agent", metavar="EMAIL", help="the agent the key acts as (with the agent scope)")
    p.set_defaults(func=cmd_api_key_new)

    rules = add("rules", lambda a: EX_CONFIG, "routing rules")
    r_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    p = r_sub.add_parser("test", parents=[common], help="dry-run a mail through the pipeline and explain it")
    p.set_defaults(func=cmd_rules_test)
    p.add_argument("file", help="an RFC 5322 mail file (.eml)")
    p.add_argument("--to", help="envelope recipient to assume")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not hasattr(args, "config"):
        args.config = os.environ.get("MAILGATE_CONFIG", DEFAULT_CONFIG)
    logformat.configure("text", "warning")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    except TempFail as exc:
        print(f"temporary failure: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except Rejected as exc:
        print(f"rejected: {exc.reason}", file=sys.stderr)
        return EX_DATAERR
    except MailgateError as exc:
        print(str(exc), file=sys.stderr)
        return EX_CONFIG
    except FileNotFoundError as exc:
        print(f"{exc.filename}: not found", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mailgate tickets list | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit does not fail again
        return 141  # 128 + SIGPIPE, as other tools in a pipeline end
    except Exception:
        if args.func is not cmd_ingest:
            raise
        # a bug of ours while an MTA waits: 75 keeps the mail queued (1 would bounce it to its sender)
        logging.getLogger("mailgate").exception("temporary failure: storing the mail failed")
        return EX_TEMPFAIL
