"""A country's holidays from the maintained ``holidays`` package, for the schedules of ``hours``.

Vocabulary, like ``hours``: imports nothing of mailgate's. Admins should not have to copy next
year's Easter or a state's Corpus Christi into sla.yaml by hand, and the package keeps those
calendars (and their changes of law) up to date.

The package is imported on first use, so a configuration without a country calendar does not pay
for it at start-up. The SLA arithmetic runs for every mail and may ask for any year a due time
spans: a calendar is checked once per (country, subdivision, categories, language), and each year's
dates are computed once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from types import MappingProxyType
from typing import Any

YAML_BOOLEANS = {False: "'NO'", True: "'ON' or 'YES'"}  # YAML 1.1 reads NO (Norway), ON (Ontario) as booleans


class CalendarError(ValueError):
    """A bad value of a calendar; ``key`` names the setting it came from, so the message can name its line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Calendar:
    """A checked calendar; ``language`` is always set when the country has translations, so holiday
    names do not change with the locale of whoever runs mailgate (the package falls back to it)."""

    country: str
    subdivision: str | None = None
    categories: tuple[str, ...] = ()
    language: str | None = None

    def year(self, year: int) -> Mapping[date, str]:
        """Holiday -> its name (several on one day joined by '; ')."""
        return _year(self, year)


@lru_cache(maxsize=256)
def _year(cal: Calendar, year: int) -> Mapping[date, str]:
    import holidays

    # the package files a day observed in lieu (New Year's Day on Friday 31 December) under the
    # holiday's own year: ask for the years on either side and keep this year's days
    days = holidays.country_holidays(
        cal.country,
        subdiv=cal.subdivision,
        years=range(year - 1, year + 2),
        language=cal.language,
        categories=cal.categories or None,
    )
    return MappingProxyType({d: str(name) for d, name in sorted(days.items()) if d.year == year})


def calendar(country: Any, subdivision: Any = None, categories: Any = None, language: Any = None) -> Calendar:
    """A calendar the package has, or ``CalendarError`` with the valid choices."""
    for key, value in (("country", country), ("subdivision", subdivision), ("language", language)):
        if isinstance(value, bool):
            quoted = YAML_BOOLEANS[value]
            raise CalendarError(key, f"YAML read {key} as {str(value).lower()}: quote the code, e.g. {quoted}")
        if value is not None and not isinstance(value, str | int):
            raise CalendarError(key, f"{key} must be a code, not {type(value).__name__}")
    if country is None:
        raise CalendarError("country", "a holiday calendar needs a country (an ISO 3166-1 code, e.g. DE)")
    if categories is not None and not isinstance(categories, str | list):
        raise CalendarError("categories", "categories must be a list, e.g. [public]")
    wanted = (categories,) if isinstance(categories, str) else tuple(categories or ())
    if not all(isinstance(c, str) for c in wanted):
        raise CalendarError("categories", "categories must be names, e.g. [public, catholic]")
    subdiv, lang = (None if v is None else str(v) for v in (subdivision, language))
    return _checked(str(country), subdiv, wanted, lang)


@lru_cache(maxsize=64)
def _checked(country: str, subdivision: str | None, categories: tuple[str, ...], language: str | None) -> Calendar:
    import holidays

    codes = holidays.list_supported_countries(include_aliases=True)
    code = country.upper() if country.upper() in codes else None
    if code is None:
        raise CalendarError("country", f"unknown country '{country}' ({_country_hint(country)})")
    entity = holidays.country_holidays(code)
    subdiv = None
    if subdivision is not None:
        known = {s.casefold(): s for s in (*entity.subdivisions, *entity.subdivisions_aliases)}
        subdiv = known.get(subdivision.casefold())
        if subdiv is None:
            choices = ", ".join(entity.subdivisions)
            raise CalendarError(
                "subdivision",
                f"unknown subdivision '{subdivision}' of {code} (one of: {choices})"
                if choices
                else f"{code} has no subdivisions in the holiday calendar: leave subdivision out",
            )
    bad = [c for c in categories if c.lower() not in entity.supported_categories]
    if bad:
        raise CalendarError(
            "categories",
            f"unknown categor{'y' if len(bad) == 1 else 'ies'} {', '.join(repr(c) for c in bad)} of {code} "
            f"(one of: {', '.join(entity.supported_categories)})",
        )
    if language is not None and language not in entity.supported_languages:
        languages = ", ".join(entity.supported_languages)
        raise CalendarError(
            "language",
            f"unknown language '{language}' for {code} (one of: {languages})"
            if languages
            else f"{code}'s holiday names have no translations: leave language out",
        )
    return Calendar(
        code, subdiv, tuple(sorted({c.lower() for c in categories})), language or entity.default_language
    )


def _country_hint(country: str) -> str:
    """Admins write 'Germany' or 'DEU' as often as 'DE'."""
    from holidays.registry import COUNTRIES

    wanted = country.strip().casefold().replace(" ", "_").replace("-", "_")
    for module, (class_name, alpha2, *others) in COUNTRIES.items():
        names = {module, class_name.casefold(), *(o.casefold() for o in others if not o.startswith("Holidays"))}
        if wanted in names:
            return f"did you mean '{alpha2}' ({class_name})?"
    return "use the country's ISO 3166-1 alpha-2 code, e.g. DE, AT, CH, FR, GB, US"
