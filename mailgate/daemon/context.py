"""Build, hold and swap the Context: one consistent snapshot of configuration and parts.

``serve`` and its child processes (the pipeline, the outbox sender) all build theirs here, and a
reload builds a new one, validates it whole and swaps it in; a bad file keeps the old one.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace
from email.utils import parseaddr

from mailgate import logformat
from mailgate.clock import Clock, SystemClock
from mailgate.config import Config, load_config
from mailgate.errors import ConfigError
from mailgate.identity import Identity, load_secret
from mailgate.logformat import log_event
from mailgate.metrics import RELOADS
from mailgate.outbound.templates import Templates
from mailgate.outbound.transport import MaildirTransport, SmtpTransport, Transport
from mailgate.pipeline.audience import Directory
from mailgate.pipeline.commands import Vocabulary
from mailgate.pipeline.ingest import Context
from mailgate.pipeline.notice import NotifyContext
from mailgate.pipeline.recover import attachment_bytes
from mailgate.pipeline.thread import TicketTag
from mailgate.rules.engine import CompiledRules
from mailgate.storage.blobs import BlobStore
from mailgate.storage.db import Database
from mailgate.web import status_link

log = logging.getLogger(__name__)


def build_context(
    config: Config, clock: Clock | None = None, db: Database | None = None, *, check: bool = True
) -> Context:
    """``check``: render every template and load the DKIM key now, so that a daemon or ``check-config``
    refuses a bad file at once; a piped mail's ``ingest`` skips it and renders only what the mail needs."""
    main = config.main
    if db is None or db.url != config.database_url:
        db = Database(config.database_url, echo=main.database.echo if main.database else False,
                      idle_in_transaction=main.cluster.lease_time.total_seconds())
    secret_file = main.security.secret_file or main.state_dir / "secret"
    domain = main.outbound.domain or parseaddr(main.outbound.from_)[1].rpartition("@")[2] or "localhost"
    assert main.templates is not None  # resolved by load_config
    templates = Templates(main.templates)
    problems = templates.check() if check else []
    if problems:
        raise ConfigError(problems)
    if check and main.outbound.dkim is not None:
        from mailgate.outbound.dkim import DkimSigner

        DkimSigner(main.outbound.dkim)  # an unreadable or invalid key is a configuration error, found now
    own = {a.lower() for a in main.intake.addresses}
    if main.intake.notes_address:
        own.add(main.intake.notes_address)
    if main.intake.status_address:  # accepted at RCPT, and never a requester or a collaborator
        own.add(main.intake.status_address)
    own.add(parseaddr(main.outbound.from_)[1].lower())
    own_addresses = frozenset(a for a in own if a)
    identity = Identity(load_secret(secret_file), domain)
    tag = TicketTag(main.tickets.number_format, main.tickets.subject_tag, main.tickets.foreign_tags)
    directory = Directory(config.agents)
    return Context(
        config=config,
        db=db,
        clock=clock or SystemClock(),
        templates=templates,
        identity=identity,
        tag=tag,
        blobs=BlobStore(main.state_dir / "attachments", recover=lambda sha256: attachment_bytes(db, sha256)),
        rules=CompiledRules(config.rules.rules),
        own_addresses=own_addresses,
        directory=directory,
        vocabulary=Vocabulary(
            agents=dict(directory.names),
            departments=frozenset(d.name for d in config.agents.departments),
            topics=frozenset(t.name for t in config.rules.help_topics),
            plans=frozenset(config.sla.sla_plans),
        ),
        notifier=NotifyContext(
            identity,
            tag,
            templates,
            own_addresses,
            main.notifications,
            directory,
            main.outbound.from_,
            main.intake.addresses[0],
            {t.name: t.notifications for t in config.rules.help_topics if t.notifications},
            main.lifecycle.satisfaction_question,
            {t.name: t.from_name for t in config.rules.help_topics if t.from_name},
            status_link.maker(identity, main.http),
        ),
    )


def build_transport(config: Config) -> Transport:
    out = config.main.outbound
    if out.transport == "maildir":
        assert out.maildir is not None
        return MaildirTransport(out.maildir)
    smtp = out.smtp
    password = None
    if smtp.password_file:
        password = smtp.password_file.read_text().strip()
    elif smtp.password_env:
        password = os.environ.get(smtp.password_env)
    return SmtpTransport(
        smtp.host,
        smtp.port,
        starttls=smtp.starttls,
        tls=smtp.tls,
        username=smtp.username,
        password=password,
        timeout=smtp.timeout.total_seconds(),
    )


class Holder:
    """The current Context; adapters read it per message, reload swaps it whole."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()

    def get(self) -> Context:
        return self._ctx

    def swap(self, ctx: Context) -> None:
        with self._lock:
            self._ctx = ctx


def reload(holder: Holder) -> bool:
    old = holder.get()
    try:
        config = load_config(old.config.path)
        ctx = build_context(config, old.clock, old.db)
    except ConfigError as exc:
        RELOADS.labels("refused").inc()
        for problem in exc.problems:  # each "file:line: what is wrong"
            log_event(log, "reload refused", logging.ERROR, problem=problem, kept="the configuration in force")
        return False
    except Exception as exc:
        RELOADS.labels("refused").inc()
        log_event(log, "reload refused", logging.ERROR, problem=repr(exc), kept="the configuration in force")
        return False
    if config.database_url != old.config.database_url:
        log.warning("database.url changes need a restart; keeping %s", old.config.database_url)
        ctx = replace(ctx, db=old.db)
    holder.swap(ctx)
    RELOADS.labels("applied").inc()
    log_event(log, "reload applied", path=str(config.path))
    return True


def swap_config(holder: Holder, config: Config) -> None:
    """Apply a configuration the daemon already validated (in a child process of serve)."""
    old = holder.get()
    # first, as serve itself has just done: the lines this process writes from now on are in the new form
    logformat.configure(config.main.logging.format, config.main.logging.level)
    try:
        ctx = build_context(config, old.clock, old.db, check=False)  # (serve rendered every template)
        if ctx.db is not old.db:  # a new database.url needs a restart, as in reload()
            ctx.db.dispose()
            ctx = replace(ctx, db=old.db)
        holder.swap(ctx)
    except Exception:
        log.exception("could not apply the reloaded configuration; keeping the old one")
