"""A date as a mail client writes it into a forwarded mail's header block, in English, German, French,
Spanish or Dutch: ``Mon, Nov 23, 2026 at 10:05 AM``, ``Montag, 23. November 2026 10:05``,
``lun. 23 nov. 2026 à 10:05``, ``lunes, 23 de noviembre de 2026 10:05``, ``23-11-2026 10:05``. (pure)

Clients write these dates for people, in the forwarder's language and time zone, and most leave the
zone out. A zone left out is the forwarder's: the forwarding mail's own Date header carries it, so
the caller passes that zone in. Anything not understood is None; the caller then says so rather than
guess a date.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "january jan januar jänner janvier janv enero ene januari",
        "february feb februar février févr fevrier fevr febrero februari",
        "march mar märz mär maerz mars marzo maart mrt",
        "april apr avril avr abril",
        "may mai mayo mei",
        "june jun juni juin junio",
        "july jul juli juillet juil julio",
        "august aug août aout agosto ago augustus",
        "september sep sept septembre septiembre setiembre",
        "october oct oktober okt octobre octubre",
        "november nov noviembre novembre",
        "december dec dezember dez décembre déc decembre diciembre dic",
    ),
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _number

_WORD = r"([^\W\d_]{3,12})\.?"
_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})\.?\s+(?:de\s+)?{_WORD},?\s+(?:de\s+)?(\d{{4}})\b", re.I)
_MONTH_DAY_YEAR = re.compile(rf"\b{_WORD}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.I)
_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_NUMERIC = re.compile(r"\b(\d{1,2})[./-](\d{1,2})[./-](\d{4}|\d{2})\b")
_TIME = re.compile(r"\b(\d{1,2})[:h](\d{2})(?::(\d{2}))?(?:\s*([ap])\.?\s?m\.?(?![a-z]))?", re.I)
_OFFSET = re.compile(r"(?:\b(?:gmt|utc)\s*)?([+-])(\d{1,2}):?(\d{2})?\b|\b(gmt|utc)\b", re.I)


def _date_part(text: str, month_first: bool) -> tuple[int, int, int, int] | None:
    """(year, month, day, where the date ends in ``text``)."""
    for m in _DAY_MONTH_YEAR.finditer(text):
        month = _MONTHS.get(m.group(2).lower())
        if month:
            return int(m.group(3)), month, int(m.group(1)), m.end()
    for m in _MONTH_DAY_YEAR.finditer(text):
        month = _MONTHS.get(m.group(1).lower())
        if month:
            return int(m.group(3)), month, int(m.group(2)), m.end()
    iso = _ISO.search(text)
    if iso:
        return int(iso.group(1)), int(iso.group(2)), int(iso.group(3)), iso.end()
    num = _NUMERIC.search(text)
    if num:
        first, second, year = int(num.group(1)), int(num.group(2)), int(num.group(3))
        year += 2000 if year < 100 else 0
        # 11/23/2026 is American whatever the language; 23/11/2026 European; 05/06 by the language's habit
        swap = second > 12 or (month_first and first <= 12 and "/" in num.group(0))
        day, month = (second, first) if swap else (first, second)
        return year, month, day, num.end()
    return None


def _zone(text: str, default: tzinfo) -> tzinfo:
    m = _OFFSET.search(text)
    if m is None:
        return default
    if m.group(4):
        return UTC
    hours, minutes = int(m.group(2)), int(m.group(3) or 0)
    if hours > 14 or minutes > 59:
        return default
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if m.group(1) == "-" else delta)


def read_date(text: str, default_zone: tzinfo | None = None, *, month_first: bool = False) -> datetime | None:
    """``month_first``: how to read an ambiguous 05/06/2026 (English clients write month first).

    RFC 5322 dates (Thunderbird, mutt) are read the same way; the standard library's parser is not
    used, as it reads what it does not understand leniently (``November 23, 2026 10:05 PM`` as 10:05).
    """
    text = " ".join(text.split())
    if not text:
        return None
    date = _date_part(text, month_first)
    if date is None:
        return None
    year, month, day, end = date
    rest = text[end:]
    clock = _TIME.search(rest)
    hour = minute = second = 0
    if clock:
        hour, minute, second = int(clock.group(1)), int(clock.group(2)), int(clock.group(3) or 0)
        meridiem = (clock.group(4) or "").lower()
        if meridiem == "p" and hour < 12:
            hour += 12
        elif meridiem == "a" and hour == 12:
            hour = 0
        rest = rest[clock.end():]
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=_zone(rest, default_zone or UTC))
    except ValueError:  # 31 February, hour 25: not a date
        return None
