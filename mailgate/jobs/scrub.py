"""Finding and replacing a person's addresses and names in stored text and JSON.

An address is matched whatever its case and with any ``+tag`` on its local part (``Pat+shop@X`` is
Pat's mailbox), and only whole: ``pat@customer.example`` does not match ``spat@customer.example`` nor
``pat@customer.example.org``. Names are matched as whole words, and only from three letters on, so
that an initial never erases every "J" of a thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ERASED_ADDRESS = "erased@erased.invalid"  # .invalid (RFC 2606): never delivered anywhere
ERASED = "[erased]"
_LOCAL_CHARS = r"[\w.!#$%&'*/=?^`{|}~+-]"


def base_of(address: str) -> tuple[str, str] | None:
    """(local part without +tag, domain), lower-cased; None for what is no address."""
    local, at, domain = address.strip().strip("<>").lower().rpartition("@")
    local = local.partition("+")[0]
    if not at or not local or not domain:
        return None
    return local, domain


def address_pattern(bases: Iterable[tuple[str, str]]) -> str:
    alternatives = sorted({rf"{re.escape(local)}(?:\+[^@\s<>\"',;]*)?@{re.escape(domain)}" for local, domain in bases})
    if not alternatives:
        return ""
    return rf"(?<!{_LOCAL_CHARS})(?:{'|'.join(alternatives)})(?![\w-]|\.\w)"


@dataclass(frozen=True)
class Needles:
    """What to look for; built once per ticket or per person."""

    addresses: re.Pattern[str] | None
    anything: re.Pattern[str] | None

    @classmethod
    def build(cls, addresses: Iterable[str], names: Iterable[str] = ()) -> Needles:
        bases = [b for b in (base_of(a) for a in addresses if a) if b is not None]
        pattern = address_pattern(bases)
        words = sorted({n.strip() for n in names if len(n.strip()) >= 3}, key=len, reverse=True)
        name_pattern = "|".join(rf"(?<!\w){re.escape(w)}(?!\w)" for w in words)
        both = "|".join(p for p in (pattern, name_pattern) if p)
        return cls(
            re.compile(pattern, re.IGNORECASE) if pattern else None,
            re.compile(both, re.IGNORECASE) if both else None,
        )

    def is_address(self, value: str | None) -> bool:
        return bool(value and self.addresses is not None and self.addresses.fullmatch(value.strip()))

    def found_in(self, value: str | None) -> bool:
        return bool(value and self.anything is not None and self.anything.search(value))

    def bytes_name(self, data: bytes) -> bool:
        """Whether a raw mail names one of the addresses (headers or body, any charset that keeps ASCII)."""
        if self.addresses is None:
            return False
        return self.addresses.search(data.decode("latin-1")) is not None

    def text(self, value: str) -> str:
        if not value or self.anything is None:
            return value
        if self.addresses is not None:
            value = self.addresses.sub(ERASED_ADDRESS, value)
        return self.anything.sub(ERASED, value)

    def json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.json(v) for k, v in value.items()}
        return value
