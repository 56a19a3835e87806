"""The only control-flow exceptions; each maps to one protocol answer at the edge.

Adapters translate them once: ``TempFail`` -> SMTP 451 / pipe exit 75 / IMAP
message left in place; ``Rejected`` -> SMTP 550 / pipe exit 65; ``ConfigError``
-> exit 1. Anything else is a bug of ours and is treated like ``TempFail`` at
the edge, so the sender keeps the mail.
"""

from __future__ import annotations


class MailgateError(Exception):
    """Base class so callers can catch every mailgate outcome in one clause."""


class ConfigError(MailgateError):
    """Configuration is invalid; ``problems`` holds one ``file:line: message`` each."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StartupError(MailgateError):
    """serve cannot start (a port in use, say): one line for the admin, exit 1, nothing left running."""


class TempFail(MailgateError):
    """The message could not be stored now; the source must keep it and retry."""


class LeaseLost(TempFail):
    """The IMAP mailbox this mail came from is now another daemon's: not stored, left for the new holder."""


class Rejected(MailgateError):
    """Policy refuses the message; the reason goes back to the sender."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ParseError(MailgateError):
    """The bytes are not a message we can read; the raw mail goes to quarantine."""


class OverLimit(ParseError):
    """The mail would cost more work than ``intake.limits`` allows; kept in quarantine, never parsed."""
