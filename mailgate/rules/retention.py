"""How long a help desk keeps what customers sent: raw mail, attachment files, and the tickets' personal data.

Written per help topic in rules.yaml and once in mailgate.yaml as the default; a topic's key wins over the
default's, key by key, and ``never`` in a topic keeps that kind of data although the default would purge
it. Ages count whole units of ``s, m, h, d, w`` as every other duration of the configuration does, plus
``y`` (365 days), since retention periods are written in years in the policies they come from.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

from mailgate.rules.conditions import _Strict

_AGE = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w|y)\s*$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800, "y": 365 * 86400}
NEVER = timedelta.max  # "never": kept for good, even when the default would purge it
KINDS = ("raw", "attachments", "tickets")


def parse_age(value: Any) -> Any:
    """A unit is required: a bare ``90`` could be days to the admin and seconds to the code."""
    if isinstance(value, str) and value.strip().lower() == "never":
        return NEVER
    if isinstance(value, str):
        m = _AGE.match(value)
        if not m or int(m.group(1)) == 0:
            raise ValueError(f"not an age: {value!r} (use e.g. 90d, 12w, 1y, or never)")
        return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    if isinstance(value, timedelta):
        return value
    raise ValueError(f"not an age: {value!r} (use e.g. 90d, 12w, 1y, or never)")


Age = Annotated[timedelta, BeforeValidator(parse_age)]


def shown(age: timedelta | None) -> str | None:
    """An age as an admin writes it, for ``rules test`` and the retention report."""
    if age is None:
        return None
    if age == NEVER:
        return "never"
    seconds = int(age.total_seconds())
    for unit in ("y", "w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


class Retention(_Strict):
    """Each key left out: kept for good (or, under a help topic, the default's value)."""

    raw: Age | None = None  # the received mail's bytes (inbound_raw), of closed tickets and of quarantine
    attachments: Age | None = None  # attachment files of closed tickets; the rows stay, marked purged
    tickets: Age | None = None  # closed tickets made anonymous: names, addresses, customers' words


def effective(topic: Retention | None, default: Retention) -> dict[str, timedelta | None]:
    """The ages that apply to one topic's tickets, None where nothing is purged."""
    out: dict[str, timedelta | None] = {}
    for kind in KINDS:
        age = getattr(topic, kind) if topic is not None else None
        age = age if age is not None else getattr(default, kind)
        out[kind] = None if age is None or age == NEVER else age
    return out
