"""The spam verdict and DMARC result a relay already wrote into a mail's header, and whether to believe them.

Anyone can write ``X-Spam-Flag: NO`` or ``Authentication-Results: mx1; dmarc=pass`` into their own mail,
so a field counts only when a relay the admin trusts (``intake.spam.trusted_relays``) wrote it:

1. **The hop that handed the mail to us is trusted.** Over SMTP/LMTP the peer's IP must be a trusted
   relay's; a mail sent straight to our port by anyone else carries nothing we believe. A pipe (the
   local MTA runs the alias) and an IMAP mailbox (its server delivered the mail) are trusted hops.
2. **Only the relays' part of the header is read.** Relays prepend, so the header is read from the top
   down to the *entry hop*: the first ``Received:`` recording that the mail was taken from an IP outside
   ``trusted_relays`` (loopback is inside: a relay handing mail to its own filter). That field and
   everything below it came with the mail from outside. A ``Received:`` without an IP in its ``from``
   clause (a local hand-off, ``Received: by ...``) does not end the relays' part. The IP is the one the
   receiving relay saw on its socket; the names around it are the sender's to choose, so none is read.
3. **Authentication-Results** counts in the relays' part, or anywhere when its authserv-id is one of
   ``authserv_ids``: RFC 8601 section 5 has the border MTA remove fields carrying its own id from
   incoming mail (Gmail writes its result just below its own ``Received:``). The topmost one counts.

Within what counts, the topmost instance of each field wins: the latest relay's word.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailgate.pipeline.authorize import _results as auth_results

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_BY = re.compile(r"\sby\s", re.IGNORECASE)
_BRACKETED = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_PARENTHESISED = re.compile(r"\(([0-9A-Fa-f:.]+)\)")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_SA_SCORE = re.compile(rf"\b(?:score|hits)=({_NUMBER})", re.IGNORECASE)
_SPAMD = re.compile(rf"^\s*\S+\s*:\s*(true|false)\s*\[\s*({_NUMBER})\s*/", re.IGNORECASE)
_LEADING_NUMBER = re.compile(rf"^\s*({_NUMBER})")
# rspamd's actions: the first three mean "spam"; greylist and soft reject are "try again later"
_RSPAMD_SPAM = {"reject", "add header", "rewrite subject"}
_RSPAMD_HAM = {"no action", "greylist", "soft reject"}
VERDICT_FIELDS = frozenset({
    "x-spam-flag", "x-spam-status", "x-spam-score", "x-spam", "x-rspamd-action", "x-rspamd-score",
    "x-spamd-result", "authentication-results",
})
DMARC_RESULTS = ("pass", "fail", "none", "neutral", "temperror", "permerror", "policy", "bestguesspass")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the trusted relays said about one mail, and why it was (or was not) believed."""

    spam: bool = False
    score: float | None = None
    dmarc: str = "unknown"  # unknown: no trusted result for the From domain
    trusted: bool = False  # the hop that handed the mail to us is a trusted relay
    why: str = ""  # one sentence: whose word this is
    used: tuple[str, ...] = ()  # the fields read, as "Name: value"
    ignored: tuple[str, ...] = ()  # verdict fields present but not believed, each with the reason
    released: bool = False  # the admin released it from quarantine: processed as not spam
    read: bool = True  # False: intake.spam names no relay, so no header was looked at (nothing to record)

    def as_record(self) -> dict[str, object]:
        return {
            "spam": self.spam,
            "score": self.score,
            "dmarc": self.dmarc,
            "trusted": self.trusted,
            "why": self.why,
            "used": list(self.used),
            "ignored": list(self.ignored),
            "released": self.released,
        }


def _ip(text: str) -> IP | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def received_from_ip(value: str) -> tuple[bool, IP | None]:
    """(has a ``from`` clause, the IP the receiver recorded for it) of one Received field."""
    text = " ".join(value.split())
    if not text.lower().startswith("from "):
        return False, None
    clause = _BY.split(text, maxsplit=1)[0]
    for pattern in (_BRACKETED, _PARENTHESISED):
        for candidate in pattern.findall(clause):
            ip = _ip(candidate)
            if ip is not None:
                return True, ip
    return True, None


def is_trusted_ip(ip: IP, relays: Sequence[Network]) -> bool:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    ip = mapped or ip
    return ip.is_loopback or any(ip.version == net.version and ip in net for net in relays)


def relays_part(headers: Sequence[tuple[str, str]], relays: Sequence[Network]) -> tuple[int, str | None]:
    """How many fields from the top the trusted relays wrote, and the entry hop's Received (None: none)."""
    for i, (name, value) in enumerate(headers):
        if name.lower() != "received":
            continue
        has_from, ip = received_from_ip(value)
        if not has_from:
            continue  # a local hand-off within the relay
        if ip is None or not is_trusted_ip(ip, relays):
            return i, " ".join(value.split())[:200]
    return len(headers), None


def _yes_no(value: str) -> bool | None:
    word = value.strip().split(",", 1)[0].split(None, 1)
    first = word[0].lower() if word else ""
    return True if first in ("yes", "true") else False if first in ("no", "false") else None


def _number(pattern: re.Pattern[str], value: str, group: int = 1) -> float | None:
    m = pattern.search(value)
    return float(m.group(group)) if m else None


def read_spam(name: str, value: str) -> tuple[bool | None, float | None]:
    """(spam or not, score) as one field says it; None where it says nothing (SpamAssassin, rspamd)."""
    name = name.lower()
    if name in ("x-spam-flag", "x-spam"):
        return _yes_no(value), None
    if name == "x-spam-status":  # SpamAssassin: "Yes, score=7.1 required=5.0 tests=..."
        return _yes_no(value), _number(_SA_SCORE, value)
    if name in ("x-spam-score", "x-rspamd-score"):
        return None, _number(_LEADING_NUMBER, value)
    if name == "x-rspamd-action":
        action = " ".join(value.lower().split())
        return (True if action in _RSPAMD_SPAM else False if action in _RSPAMD_HAM else None), None
    if name == "x-spamd-result":  # rspamd: "default: True [7.10 / 15.00]; SYMBOL(1.0)[...]; ..."
        m = _SPAMD.match(value)
        return (m.group(1).lower() == "true", float(m.group(2))) if m else (None, None)
    return None, None


def read_dmarc(value: str, from_domain: str | None) -> tuple[str, str | None]:
    """(authserv-id, DMARC result for the From domain or None) of one Authentication-Results field.

    Microsoft 365 writes no authserv-id (``spf=pass ...; dmarc=pass header.from=...``): its id is "".
    """
    authserv, results = auth_results(value)
    if authserv.partition("=")[0] in ("spf", "dkim", "dmarc", "arc", "auth", "iprev", "none"):
        authserv, results = auth_results("; " + value)  # no authserv-id: every statement is a result
    for method, result, props in results:
        if method != "dmarc":
            continue
        said_for = props.get("header.from", "").strip().lower().rstrip(".")
        if from_domain is not None and said_for and said_for != from_domain:
            continue  # a result about another domain than the From we show
        return authserv, result if result in DMARC_RESULTS else "unknown"
    return authserv, None


@dataclass
class _Reading:
    spam: bool | None = None
    score: float | None = None
    dmarc: str | None = None


def read_verdict(
    headers: Sequence[tuple[str, str]],
    *,
    hop_trusted: bool,
    hop: str,
    relays: Sequence[Network],
    authserv_ids: Iterable[str],
    from_domain: str | None,
) -> Verdict:
    """The verdict the trusted relays wrote (pure). ``hop`` says who handed the mail over, for ``why``."""
    present = [(i, n, v) for i, (n, v) in enumerate(headers) if n.lower() in VERDICT_FIELDS]
    if not hop_trusted:
        untrusted = tuple(f"{n}: {_short(v)} (not believed: {hop})" for _, n, v in present)
        return Verdict(why=f"{hop}: no header of this mail is believed", ignored=untrusted)
    part, entry = relays_part(headers, relays)
    ids = {a.lower() for a in authserv_ids}
    reading, used, ignored = _Reading(), list[str](), list[str]()
    for i, name, value in present:
        lower = name.lower()
        if lower == "authentication-results":
            authserv, dmarc = read_dmarc(value, from_domain)
            if i >= part and authserv not in ids:
                ignored.append(f"{name}: {_short(value)} (below the entry hop, authserv-id {authserv or '-'} "
                               "not in authserv_ids: the sender's own)")
            elif dmarc is not None and reading.dmarc is None:
                reading.dmarc = dmarc
                used.append(f"{name}: {_short(value)}")
            continue
        if i >= part:
            ignored.append(f"{name}: {_short(value)} (below the entry hop: came with the mail)")
            continue
        spam, score = read_spam(name, value)
        if (spam is not None and reading.spam is None) or (score is not None and reading.score is None):
            used.append(f"{name}: {_short(value)}")
        reading.spam = reading.spam if reading.spam is not None else spam
        reading.score = reading.score if reading.score is not None else score
    where = f"ends at the entry hop ({entry})" if entry else "is the whole header (no hop from outside them)"
    return Verdict(
        spam=bool(reading.spam),
        score=reading.score,
        dmarc=reading.dmarc or "unknown",
        trusted=True,
        why=f"{hop}; the trusted relays' part of the header {where}"[:600],
        used=tuple(used),
        ignored=tuple(ignored),
    )


def _short(value: str) -> str:
    text = " ".join(value.split())
    return text if len(text) <= 160 else text[:157] + "..."
