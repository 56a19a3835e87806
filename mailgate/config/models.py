"""mailgate.yaml as typed models: intake, outbound, tickets, notifications, security, lifecycle.

Paths are resolved relative to the file that names them (``load.py``); the side files it names have
their models in ``side_files.py``; cross-file references are checked after the models exist
(``check.py``), and no model imports the checks.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailgate.config.fields import Duration, Email, Size, _Listen, _Strict
from mailgate.config.http import Http
from mailgate.config.intake_policy import Flood, Spam
from mailgate.config.side_files import AgentsFile, SlaFile
from mailgate.domain import check_kinds
from mailgate.rules.retention import Retention
from mailgate.rules.schema import RulesFile


class Metrics(_Listen):
    """Prometheus text on http://LISTEN/metrics and a health check on /healthz. Absent: no such port."""

    listen: str = "127.0.0.1:9425"


class SmtpIntake(_Listen):
    listen: str = "127.0.0.1:2525"
    lmtp: bool = False
    max_message_size: Size = 25 * 2**20
    # Caps that keep one client from taking the daemon's memory or sockets: over them a client hears
    # 421 (connections), 452 (recipients; RFC 5321 requires at least 100) or 451 (bytes), and retries.
    max_connections: int = Field(default=100, ge=1)
    max_recipients: int = Field(default=100, ge=1)
    max_bytes_in_flight: Size = 256 * 2**20


class ImapWatchdog(_Strict):
    """When a mailbox's intake looks dead, tell the admin (log + mail to ``admin_email``), once per incident."""

    check_interval: Duration = timedelta(seconds=60)
    failing_after: Duration = timedelta(minutes=15)  # connection/login failing this long
    quiet_period: Duration | None = None  # no mail at all for this long (off unless set, e.g. 2d)
    stuck_after: Duration | None = None  # mail waiting in the folder this long; default 3 x poll_interval
    token_warn_before: Duration = timedelta(minutes=10)  # OAuth2 token file expires within this
    token_lifetime: Duration | None = timedelta(hours=1)  # token file without expires_at: mtime + this


_CREDENTIALS = ("password", "password_file", "password_env", "oauth2_token_command", "oauth2_token_file")


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ImapMailbox(_Strict):
    name: str
    host: str
    port: int = 993  # 143 when security is starttls or plain and no port is given
    security: Literal["tls", "starttls", "plain"] = "tls"
    username: str
    password: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    oauth2_token_command: str | None = None
    oauth2_token_file: Path | None = None
    cafile: Path | None = None
    folder: str = "INBOX"
    processed_folder: str | None = None
    quarantine_folder: str | None = None
    help_topic: str | None = None
    idle: bool = True
    poll_interval: Duration = timedelta(seconds=60)
    idle_timeout: Duration = timedelta(minutes=25)
    batch_size: int = Field(default=100, ge=1, le=1000)
    # a mail bigger than this (by the server's RFC822.SIZE) is not fetched: its header is recorded in
    # quarantine, the mail moved to quarantine_folder, the admin told, and the next mail fetched
    max_message_size: Size = 25 * 2**20
    timeout: Duration = timedelta(seconds=60)  # connect and per-command socket timeout
    watchdog: ImapWatchdog = ImapWatchdog()

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and "port" not in data and data.get("security") in ("starttls", "plain"):
            return {**data, "port": 143}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ImapMailbox:
        problems = []
        given = [name for name in _CREDENTIALS if getattr(self, name) is not None]
        if len(given) != 1:
            problems.append(f"give exactly one of {', '.join(_CREDENTIALS)} (got {', '.join(given) or 'none'})")
        if self.security == "plain" and not is_loopback(self.host):
            problems.append(
                f"security: plain sends the password unencrypted; allowed only to a loopback host, "
                f"not {self.host!r} (use tls or starttls)"
            )
        if self.folder in (self.processed_folder, self.quarantine_folder):
            problems.append("processed_folder and quarantine_folder must differ from folder")
        if self.idle_timeout >= timedelta(minutes=29):
            problems.append("idle_timeout must stay under 29 minutes (RFC 2177: servers may drop idle clients)")
        if problems:
            raise ValueError(f"mailbox {self.name!r}: " + "; ".join(problems))
        return self

    @property
    def stuck_after(self) -> timedelta:
        return self.watchdog.stuck_after or 3 * self.poll_interval


class Limits(_Strict):
    """The most work one mail may cost; a mail over a limit is kept in quarantine with the reason.

    The defaults are far above what real mail needs (a few dozen headers, a few addresses, a dozen
    parts) and far below what makes parsing take seconds.
    """

    max_headers: int = Field(default=1000, ge=10)  # header fields in one header block
    max_header_bytes: Size = 1 * 2**20  # the size of one header block
    max_addresses: int = Field(default=1000, ge=1)  # addresses in one To, Cc, From, Reply-To ... header
    max_parts: int = Field(default=500, ge=1)  # MIME parts in the whole mail
    max_depth: int = Field(default=20, ge=1)  # nesting of multiparts and attached mails


class StatusAnswers(_Strict):
    """How often one address is answered from ``intake.status_address``: From is anyone's to write, so
    a stranger who forges a victim's address a thousand times must not make us mail the victim a thousand
    times. Requests over the limit are recorded and dropped."""

    count: int = Field(default=3, ge=1)
    within: Duration = timedelta(hours=1)


class Intake(_Strict):
    addresses: list[Email] = Field(min_length=1)
    notes_address: Email | None = None
    # a customer mails it for the list of their open tickets (pipeline/status_request.py); never a ticket
    status_address: Email | None = None
    status_answers: StatusAnswers = StatusAnswers()
    smtp: SmtpIntake | None = SmtpIntake()
    imap: list[ImapMailbox] = []
    limits: Limits = Limits()
    spam: Spam = Spam()  # the relay's verdict: trusted only from trusted_relays (config/intake_policy.py)
    flood: Flood | None = None  # new tickets per sender and domain; absent: no limit

    @field_validator("status_address")
    @classmethod
    def _status_apart(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Mail to the status address never opens a ticket: were it also a support address, none would."""
        taken = {*info.data.get("addresses", []), info.data.get("notes_address")}
        if value is not None and value in taken:
            raise ValueError(f"status_address {value} is also a support or notes address; give it one of its own")
        return value

    @field_validator("imap")
    @classmethod
    def _unique_names(cls, value: list[ImapMailbox]) -> list[ImapMailbox]:
        names = [mb.name for mb in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:  # the name keys each mailbox's UID checkpoint
            raise ValueError(f"mailbox names must be unique; repeated: {', '.join(duplicates)}")
        return value


class OutboundSmtp(_Strict):
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    timeout: Duration = timedelta(seconds=30)


class Retry(_Strict):
    first: Duration = timedelta(seconds=30)
    maximum: Duration = timedelta(hours=1)
    give_up_after: Duration = timedelta(days=2)


class Dkim(_Strict):
    """Sign outgoing mail (dkimpy): the key file is PEM, the public key is published at
    ``<selector>._domainkey.<domain>``."""

    selector: str
    domain: str
    private_key_file: Path


class Outbound(_Strict):
    from_: str = Field(alias="from")
    transport: Literal["maildir", "smtp"] = "maildir"
    maildir: Path | None = None
    smtp: OutboundSmtp = OutboundSmtp()
    retry: Retry = Retry()
    domain: str | None = None  # for Message-IDs; defaults to the From domain
    dkim: Dkim | None = None
    # How long a claimed row stays reserved for its sender. A sender that dies mid-send leaves its row
    # for another to take over after this long; it must exceed the time one delivery can take.
    lease: Duration = Field(default=timedelta(minutes=5), ge=timedelta(seconds=1))


class CustomerClose(_Strict):
    """A requester closes their own ticket by replying with one of ``words`` on a line of its own
    (pipeline/customer_close.py). Off unless enabled."""

    enabled: bool = False
    words: list[str] = Field(default=["#close"], min_length=1)
    status: Literal["closed", "resolved"] = "closed"

    @field_validator("words")
    @classmethod
    def _commands(cls, value: list[str]) -> list[str]:
        """A word must look like a command: without the '#', a customer's own "Close" line would close."""
        for word in value:
            if not word.startswith("#") or len(word) < 2 or any(ch.isspace() for ch in word):
                raise ValueError(f"{word!r}: a close word starts with '#' and has no spaces, e.g. '#close'")
        return [w.lower() for w in value]


class Tickets(_Strict):
    number_format: str = "######"
    subject_tag: str = "[#{number}]"
    customer_close: CustomerClose = CustomerClose()
    # other help desks' subject tags, name -> pattern: their numbers thread to tickets imported with them
    foreign_tags: dict[str, str] = {}

    @field_validator("number_format")
    @classmethod
    def _digits(cls, value: str) -> str:
        if len(value) > 32:
            raise ValueError("number_format may be at most 32 characters long")
        if value.count("#") < 4:
            raise ValueError("number_format needs at least four '#' digit places")
        return value

    @field_validator("subject_tag")
    @classmethod
    def _has_number(cls, value: str) -> str:
        if value.count("{number}") != 1:
            raise ValueError("subject_tag must contain {number} exactly once")
        return value

    @field_validator("foreign_tags")
    @classmethod
    def _foreign(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", name):
                raise ValueError(f"foreign tag name {name!r}: use 1-40 lower-case letters, digits, '-' or '_'")
            if name == "forwarded":  # the key under which agents' inline forwards are recognised
                raise ValueError("foreign tag name 'forwarded' is mailgate's own; choose another")
            if pattern.count("{number}") != 1:
                raise ValueError(f"foreign tag {name}: the pattern must contain {{number}} exactly once: {pattern!r}")
            if not pattern.replace("{number}", "").strip():
                raise ValueError(f"foreign tag {name}: a bare {{number}} would take any number in a subject")
        return value


class Database(_Strict):
    url: str
    echo: bool = False


class Scheduler(_Strict):
    outbox_interval: Duration = timedelta(seconds=5)
    batch_size: int = 50
    sla_interval: Duration = timedelta(seconds=60)


class Cluster(_Strict):
    """Several ``serve`` on one PostgreSQL: each names itself in the registry and leases IMAP mailboxes.

    A mailbox whose holder stops renewing is taken by another daemon within two ``lease_time``;
    the holder renews every third of it. Keep it well above a database failover's duration.
    """

    name: str | None = Field(default=None, min_length=1, max_length=200)  # default: host-pid
    lease_time: Duration = timedelta(seconds=30)

    @field_validator("lease_time")
    @classmethod
    def _long_enough(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=2):
            raise ValueError("lease_time must be at least 2s")
        return value


class Logging(_Strict):
    """How serve and the CLI write their log: one line per event (see ``mailgate/logformat.py``)."""

    format: Literal["logfmt", "json", "text"] = "logfmt"
    level: Literal["debug", "info", "warning", "error"] = "info"


class RateLimit(_Strict):
    count: int = Field(ge=1)
    within: Duration


class Notifications(_Strict):
    """Which notifications go out, and the limits on automatic mail (loop and flood safety)."""

    kinds: dict[str, bool] = {}
    rate_limits: list[RateLimit] = [
        RateLimit(count=10, within=timedelta(minutes=10)),
        RateLimit(count=25, within=timedelta(hours=1)),
        RateLimit(count=100, within=timedelta(hours=10)),
    ]
    ticket_rate_limits: list[RateLimit] = [
        RateLimit(count=10, within=timedelta(minutes=10)),
        RateLimit(count=15, within=timedelta(minutes=30)),
        RateLimit(count=25, within=timedelta(hours=1)),
        RateLimit(count=50, within=timedelta(hours=3)),
        RateLimit(count=100, within=timedelta(hours=10)),
    ]
    bounce_suppression: Duration = timedelta(days=60)
    reply_to_token: bool = True

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: dict[str, bool]) -> dict[str, bool]:
        return check_kinds(value)

    def enabled(self, kind: str, *overrides: dict[str, bool] | None) -> bool:
        """Global switch, overridden by the department's, then the help topic's (most specific last)."""
        on = self.kinds.get(kind, True)
        for override in overrides:
            if override and kind in override:
                on = override[kind]
        return on


class AgentAuthentication(_Strict):
    """What makes a mail from an agent's address count as the agent (From alone never does).

    A reply to a mailgate alert carries the agent's signed reply address; a mail the
    receiving MX authenticated carries ``Authentication-Results`` from a trusted
    ``authserv_id`` with DKIM or SPF passing for the agent's domain.
    """

    reply_token: bool = True
    authserv_ids: list[str] = []
    methods: list[Literal["dkim", "spf"]] = ["dkim", "spf"]


class Security(_Strict):
    secret_file: Path | None = None
    agent_authentication: AgentAuthentication = AgentAuthentication()
    stranger_reply: Literal["new_ticket", "collaborator", "reject"] = "new_ticket"
    # Whose address a new ticket belongs to. From, always, by default: Reply-To is the sender's word and
    # anyone can write a third party's address there, so it only makes that address a collaborator.
    # ``requester``: Reply-To is the requester (web forms that send From: noreply); ``ignore``: unused.
    reply_to: Literal["collaborator", "requester", "ignore"] = "collaborator"


class Lifecycle(_Strict):
    """Ticket status rules: reopening, auto-close, satisfaction question."""

    reopen_window: Duration = timedelta(days=14)
    auto_close_after: Duration | None = timedelta(days=7)
    reminder_after: Duration | None = None  # remind the requester of an awaiting_reply ticket (off)
    auto_resolve_after: Duration | None = None  # resolve an awaiting_reply ticket nobody answers (off)
    satisfaction_question: bool = False


class RetentionDefaults(Retention):
    """The default for every help topic (``raw``, ``attachments``, ``tickets``: rules/retention.py), and how
    often each daemon runs the purge (jobs/retention.py). Nothing is purged unless an age is given."""

    run_every: Duration = Field(default=timedelta(days=1), ge=timedelta(seconds=1))
    batch_size: int = Field(default=500, ge=1, le=10000)  # rows per transaction


class MainFile(_Strict):
    state_dir: Path = Path("../var")
    database: Database | None = None
    intake: Intake
    outbound: Outbound
    tickets: Tickets = Tickets()
    notifications: Notifications = Notifications()
    rules: Path | None = None
    agents: Path | None = None
    sla: Path | None = None
    templates: Path | None = None  # default: the templates shipped with mailgate
    scheduler: Scheduler = Scheduler()
    cluster: Cluster = Cluster()
    logging: Logging = Logging()
    metrics: Metrics | None = None
    http: Http | None = None  # the HTTP API, contact form and status page (config/http.py)
    # SIGTERM: how long serve may take to finish the mail it already took in and stop its processes,
    # before it stops them hard (under the unit's TimeoutStopSec=60s, after which systemd kills it all)
    drain_time: Duration = timedelta(seconds=25)
    security: Security = Security()
    lifecycle: Lifecycle = Lifecycle()
    retention: RetentionDefaults = RetentionDefaults()
    admin_email: Email | None = None
    # serve runs the pipeline and the outbox sender in child processes (more cores, intake first);
    # false keeps it one process
    processes: bool = True


class Config(_Strict):
    """Everything loaded and cross-checked; the only config object the code sees."""

    path: Path
    main: MainFile
    rules: RulesFile
    agents: AgentsFile
    sla: SlaFile

    @property
    def database_url(self) -> str:
        assert self.main.database is not None
        return self.main.database.url

    @property
    def state_dir(self) -> Path:
        return self.main.state_dir


