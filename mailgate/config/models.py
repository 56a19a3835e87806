"""mailgate.yaml and the files it names, validated once into typed objects.

Every problem is reported at once as ``file:line: message``; paths are
resolved relative to the file that names them, so a config directory can be
moved as a whole.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailgate.domain import check_kinds
from mailgate.errors import ConfigError
from mailgate.rules.schema import RulesFile
from mailgate.yamlfile import YamlDoc, load_yaml, raise_if, validation_problems

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def parse_duration(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 8h, 3d)")
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    return value


def parse_size(value: Any) -> Any:
    if isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"not a size: {value!r} (use e.g. 25MiB)")
        return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    return value


def _email(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
        if not _EMAIL.match(value):
            raise ValueError(f"not an email address: {value!r}")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Email = Annotated[str, BeforeValidator(_email)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SmtpIntake(_Strict):
    listen: str = "127.0.0.1:2525"
    lmtp: bool = False
    max_message_size: Size = 25 * 2**20
    # Caps that keep one client from taking the daemon's memory or sockets: over them a client hears
    # 421 (connections), 452 (recipients; RFC 5321 requires at least 100) or 451 (bytes), and retries.
    max_connections: int = Field(default=100, ge=1)
    max_recipients: int = Field(default=100, ge=1)
    max_bytes_in_flight: Size = 256 * 2**20

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"listen must be HOST:PORT, got {value!r}")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


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


class Intake(_Strict):
    addresses: list[Email] = Field(min_length=1)
    notes_address: Email | None = None
    smtp: SmtpIntake | None = SmtpIntake()
    imap: list[ImapMailbox] = []
    limits: Limits = Limits()

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


class Tickets(_Strict):
    number_format: str = "######"
    subject_tag: str = "[#{number}]"

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


class Database(_Strict):
    url: str
    echo: bool = False


class Scheduler(_Strict):
    outbox_interval: Duration = timedelta(seconds=5)
    batch_size: int = 50
    sla_interval: Duration = timedelta(seconds=60)


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


class Agent(_Strict):
    name: str
    email: Email


class Department(_Strict):
    name: str
    manager: Email | None = None
    members: list[Email] = []
    email: Email | None = None
    notifications: Annotated[dict[str, bool], AfterValidator(check_kinds)] = {}


class Team(_Strict):
    name: str
    members: list[Email] = []


class AgentsFile(_Strict):
    agents: list[Agent] = []
    departments: list[Department] = []
    teams: list[Team] = []


def _percent(value: Any) -> Any:
    if isinstance(value, str) and value.strip().endswith("%"):
        value = value.strip()[:-1]
    try:
        return int(value) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(f"not a percentage: {value!r} (use e.g. 75%)") from None


SlaTarget = Literal["first_response", "resolution"]


class Escalation(_Strict):
    """One rung of a plan's ladder: at ``at`` percent of a target (``of``; both targets when left out)."""

    at: Annotated[int, BeforeValidator(_percent), Field(gt=0, le=1000)]
    of: SlaTarget | None = None
    notify: list[str] = []  # assignee | manager | department | an address
    overdue: bool = False
    priority: Literal["low", "normal", "high", "emergency"] | None = None
    assign: Email | None = None
    tag: str | None = None

    @field_validator("notify")
    @classmethod
    def _audience(cls, value: list[str]) -> list[str]:
        return [v if v in ("assignee", "manager", "department") else _email(v) for v in value]


class SlaTargets(_Strict):
    first_response: Duration | None = None
    resolution: Duration | None = None


class SlaPlan(_Strict):
    first_response: Duration | None = None
    resolution: Duration | None = None
    schedule: str = "24x7"
    pause_on: list[Literal["awaiting_reply", "in_progress"]] = []
    priorities: dict[Literal["low", "normal", "high", "emergency"], SlaTargets] = {}  # per-priority targets
    escalations: list[Escalation] = []

    @field_validator("escalations")
    @classmethod
    def _distinct_steps(cls, value: list[Escalation]) -> list[Escalation]:
        seen: set[tuple[str, int]] = set()
        for rung in value:
            for target in (rung.of,) if rung.of else ("first_response", "resolution"):
                if (target, rung.at) in seen:
                    raise ValueError(f"two escalations at {rung.at}% of {target}; put the actions in one")
                seen.add((target, rung.at))
        return value


class SlaFile(_Strict):
    schedules: dict[str, dict[str, Any]] = {}
    sla_plans: dict[str, SlaPlan] = {}


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
    security: Security = Security()
    lifecycle: Lifecycle = Lifecycle()
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


def _resolve(base: Path, value: Path | None) -> Path | None:
    if value is None:
        return None
    value = Path(os.path.expandvars(str(value))).expanduser()
    return value if value.is_absolute() else (base / value).resolve()


def _sqlite_url(base: Path, url: str) -> str:
    """Make ``sqlite:///relative.db`` relative to the config folder, not the cwd."""
    scheme, sep, path = url.partition(":///")
    if scheme.startswith("sqlite") and sep and path and not path.startswith("/") and ":memory:" not in path:
        return f"{scheme}:///{(base / path).resolve()}"
    return url


def default_templates() -> Path:
    """The shipped templates: the checkout's ``templates/`` or the copy inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "_data" / "templates"):
        if (candidate / "ack_new.txt.j2").exists():
            return candidate
    raise ConfigError(f"{here}:1: mailgate's default templates are missing (broken install?)")


def _validate(doc: YamlDoc, model: type[BaseModel], problems: list[str]) -> Any:
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(validation_problems(doc, exc))
        return None


def _load_side(path: Path | None, model: type[BaseModel], problems: list[str]) -> tuple[Any, YamlDoc | None]:
    if path is None:
        return model(), None
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None, None
    return _validate(doc, model, problems), doc


def _resolve_main(base: Path, main: MainFile) -> MainFile:
    state_dir = _resolve(base, main.state_dir)
    assert state_dir is not None
    db = main.database or Database(url=f"sqlite:///{state_dir / 'mailgate.db'}")
    out = main.outbound
    mailboxes = [
        mb.model_copy(
            update={
                "password_file": _resolve(base, mb.password_file),
                "oauth2_token_file": _resolve(base, mb.oauth2_token_file),
                "cafile": _resolve(base, mb.cafile),
            }
        )
        for mb in main.intake.imap
    ]
    return main.model_copy(
        update={
            "state_dir": state_dir,
            "database": db.model_copy(update={"url": _sqlite_url(base, db.url)}),
            "rules": _resolve(base, main.rules),
            "agents": _resolve(base, main.agents),
            "sla": _resolve(base, main.sla),
            "templates": _resolve(base, main.templates) or default_templates(),
            "intake": main.intake.model_copy(update={"imap": mailboxes}),
            "outbound": out.model_copy(
                update={
                    "maildir": _resolve(base, out.maildir) or state_dir / "outgoing",
                    "dkim": out.dkim.model_copy(update={"private_key_file": _resolve(base, out.dkim.private_key_file)})
                    if out.dkim
                    else None,
                    "smtp": out.smtp.model_copy(update={"password_file": _resolve(base, out.smtp.password_file)}),
                }
            ),
            "security": main.security.model_copy(update={"secret_file": _resolve(base, main.security.secret_file)}),
        }
    )


def load_database_url(path: Path | str) -> str:
    """Only mailgate.yaml's database, so read-only commands work while another file is being fixed."""
    path = Path(path).resolve()
    problems: list[str] = []
    main = _validate(load_yaml(path), MainFile, problems)
    if main is None:
        raise ConfigError(problems)
    database = _resolve_main(path.parent, main).database
    assert database is not None  # _resolve_main fills in the default
    return database.url


def load_config(path: Path | str) -> Config:
    from mailgate.config_check import CrossCheck, in_file_order, partial_rules  # they use the models above

    path = Path(path).resolve()
    problems: list[str] = []
    doc = load_yaml(path)
    main = _validate(doc, MainFile, problems)
    if main is None:
        raise ConfigError(problems)
    main = _resolve_main(path.parent, main)
    rules, rules_doc = _load_side(main.rules, RulesFile, problems)
    agents, agents_doc = _load_side(main.agents, AgentsFile, problems)
    sla, sla_doc = _load_side(main.sla, SlaFile, problems)
    docs = {"main": doc, "rules": rules_doc, "agents": agents_doc, "sla": sla_doc}
    if rules is None and rules_doc is not None and agents is not None and sla is not None:
        # rules.yaml has errors: still cross-check its valid parts, so check-config says everything at once
        partial, positions = partial_rules(rules_doc)
        config = Config(path=path, main=main, rules=partial, agents=agents, sla=sla)
        problems.extend(CrossCheck(config, docs, positions).run())
    raise_if(in_file_order(problems))
    config = Config(path=path, main=main, rules=rules, agents=agents, sla=sla)
    checker = CrossCheck(config, docs)
    problems.extend(checker.run())
    raise_if(in_file_order(problems))
    return config.model_copy(update={"rules": checker.bound_rules})  # list files read, schedules parsed
