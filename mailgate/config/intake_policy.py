"""``intake.spam`` and ``intake.flood``: mail that is stored but held, by the relay's verdict or by volume.

Kept apart from ``models.py`` (which names them under ``intake``) because each has its own small
language: relays are IP addresses or networks, a rung is ``COUNT/DURATION``.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from mailgate.config.fields import _Strict, parse_duration

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_RUNG = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")

# Public mail services: one domain, millions of unrelated people. A per-domain rung there would let one
# flooder lock out every customer of the service, so the per-domain count is off for these by default.
PUBLIC_DOMAINS = (
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com", "yahoo.com",
    "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com", "gmx.com", "gmx.net", "gmx.de", "web.de",
    "mail.com", "proton.me", "protonmail.com", "pm.me", "zoho.com", "fastmail.com", "yandex.com", "yandex.ru",
    "mail.ru", "qq.com", "163.com", "126.com", "t-online.de", "orange.fr", "free.fr", "laposte.net",
    "libero.it", "naver.com", "hey.com", "tutanota.com", "tuta.io",
)


def _network(value: Any) -> Any:
    """An address or a network. Not a host name: a name in a header is whatever the sending host said
    (HELO), and mailgate does no DNS; the IP is what the receiving relay saw on its socket."""
    if not isinstance(value, str):
        return value
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"trusted relay {value!r} is not an IP address or network (e.g. 192.0.2.25 or 192.0.2.0/24); "
            "give the relay's address, as the SMTP peer and Received headers show it, not its name"
        ) from None


class Spam(_Strict):
    """Trust the spam verdict and DMARC result your MTA wrote into the header (pipeline/mtaverdict.py)."""

    trusted_relays: list[Annotated[Network, BeforeValidator(_network)]] = []
    authserv_ids: list[str] = []  # default: security.agent_authentication.authserv_ids
    action: str = "quarantine"  # quarantine | accept | topic:<help topic>

    @field_validator("action")
    @classmethod
    def _action(cls, value: str) -> str:
        kind, sep, topic = value.partition(":")
        if value in ("quarantine", "accept") or (kind == "topic" and sep and topic.strip()):
            return value if kind != "topic" else f"topic:{topic.strip()}"
        raise ValueError(f"action must be quarantine, accept or topic:<help topic>, not {value!r}")

    @field_validator("authserv_ids")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value if v.strip()]

    @property
    def topic(self) -> str | None:
        return self.action.partition(":")[2] if self.action.startswith("topic:") else None


class Rung:
    """At most ``count`` new tickets within ``within``; the mail that would be one more is held."""

    __slots__ = ("count", "text", "within")

    def __init__(self, count: int, within: timedelta, text: str) -> None:
        self.count, self.within, self.text = count, within, text

    def __repr__(self) -> str:
        return f"Rung({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rung) and (self.count, self.within) == (other.count, other.within)

    def __hash__(self) -> int:
        return hash((self.count, self.within))


def parse_rung(value: Any) -> Rung:
    if not isinstance(value, str):
        raise ValueError(f"a rung is COUNT/DURATION in quotes, e.g. \"15/10m\", not {value!r}")
    m = _RUNG.match(value)
    if not m:
        raise ValueError(f"not a rung: {value!r} (write COUNT/DURATION, e.g. \"15/10m\" or \"100/1d\")")
    try:
        within = parse_duration(m.group(2))
    except ValueError as exc:
        raise ValueError(f"not a rung: {value!r}: {exc}") from None
    if int(m.group(1)) < 1 or within <= timedelta(0):
        raise ValueError(f"{value!r}: the count must be at least 1 and the duration more than 0")
    return Rung(int(m.group(1)), within, f"{int(m.group(1))}/{m.group(2)}")


def _ladder(value: Any) -> Any:
    """One rung, a list of them (each must hold), or off/false/[] for none."""
    if value is None or value is False or value == "off":
        return []
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, Rung) else parse_rung(item) for item in items]


Ladder = Annotated[list[Any], BeforeValidator(_ladder)]


class Flood(_Strict):
    """New tickets per sender address and per sender domain (pipeline/flood.py); above it: held."""

    per_sender: Ladder = Field(default_factory=lambda: [parse_rung("15/10m")])
    per_domain: Ladder = Field(default_factory=lambda: [parse_rung("60/10m")])
    exempt_domains: list[str] = []  # never counted nor held (a partner that opens tickets by the hundred)
    public_domains: list[str] = list(PUBLIC_DOMAINS)  # per-sender only: replaces the built-in list

    @field_validator("exempt_domains", "public_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            domain = item.strip().lower().lstrip("@").rstrip(".")
            if not domain or "@" in domain or " " in domain:
                raise ValueError(f"not a domain: {item!r}")
            out.append(domain)
        return out

    def per_domain_applies(self, domain: str) -> bool:
        return bool(self.per_domain) and domain not in self.public_domains
