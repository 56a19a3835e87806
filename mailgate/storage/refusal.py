"""A database server that answers but refuses us for good (no such database, role or password): the
configuration must change, waiting will not help. Kept apart from ``db`` so that the CLI's quick
views can say it too without importing SQLAlchemy."""

from __future__ import annotations

import re

# A server that answers but refuses us for good: waiting will not help, the configuration must change.
_MISCONFIGURED = (
    re.compile(r'database "[^"]*" does not exist'),
    re.compile(r'role "[^"]*" does not exist'),
    re.compile(r"password authentication failed for user \S+"),
    re.compile(r"no pg_hba\.conf entry for .*?(?=$|\n)"),
)


def misconfigured(exc: BaseException) -> str | None:
    """What is wrong in ``database.url`` when the server said so (no such database, role or password)."""
    text = str(getattr(exc, "orig", None) or exc)
    return next((m.group(0) for pattern in _MISCONFIGURED if (m := pattern.search(text))), None)
