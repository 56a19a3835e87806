"""Configuration: mailgate.yaml and the files it names, loaded once into typed, cross-checked objects.

``fields`` (typed values) and the models (``models``, ``side_files``) come first, ``load`` reads the
files and ``check`` runs the cross-file checks after the models exist; the models never import the
checks. May import the vocabulary (``mailgate.domain``, ``errors``, ``hours``, ``yamlfile``) and
``mailgate.rules``, nothing above. Everything else imports its names from here.
"""

from mailgate.config.fields import parse_duration, parse_size
from mailgate.config.load import default_templates, load_config, load_database_url
from mailgate.config.models import (
    AgentAuthentication,
    Cluster,
    Config,
    CustomerClose,
    Database,
    Dkim,
    ImapMailbox,
    ImapWatchdog,
    Intake,
    Lifecycle,
    Limits,
    Logging,
    MainFile,
    Metrics,
    Notifications,
    Outbound,
    OutboundSmtp,
    RateLimit,
    Retry,
    Scheduler,
    Security,
    SmtpIntake,
    StatusAnswers,
    Tickets,
    is_loopback,
)
from mailgate.config.side_files import Agent, AgentsFile, Department, Escalation, SlaFile, SlaPlan, SlaTargets, Team

__all__ = [
    "Agent",
    "AgentAuthentication",
    "AgentsFile",
    "Cluster",
    "Config",
    "CustomerClose",
    "Database",
    "Department",
    "Dkim",
    "Escalation",
    "ImapMailbox",
    "ImapWatchdog",
    "Intake",
    "Lifecycle",
    "Limits",
    "Logging",
    "MainFile",
    "Metrics",
    "Notifications",
    "Outbound",
    "OutboundSmtp",
    "RateLimit",
    "Retry",
    "Scheduler",
    "Security",
    "SlaFile",
    "SlaPlan",
    "SlaTargets",
    "SmtpIntake",
    "StatusAnswers",
    "Team",
    "Tickets",
    "default_templates",
    "is_loopback",
    "load_config",
    "load_database_url",
    "parse_duration",
    "parse_size",
]
