"""How much work may one mail cost? A look at the raw bytes before the parser sees them.

Python's ``email`` parser and header decoders take time that grows with the
number of header fields, addresses, encoded words and MIME parts, sometimes
faster than linearly: a 2 MB mail whose To folds 125,000 addresses took 14 s,
a subject of 100,000 encoded words 23 s. One such mail must not hold up the
mail behind it, so these counts are taken on the raw bytes first (a few scans
at memory speed) and a mail over ``intake.limits`` is kept in quarantine with
the limit it broke, never parsed. Whatever passes is bounded in parse time
(encoded words, whose decoding grows with the square of their number, are cut
at ``charsets.MAX_ENCODED_HEADER`` instead: a long subject is not worth a refusal).
"""

from __future__ import annotations

import re
from typing import Protocol

from mailgate.domain import RawMail
from mailgate.errors import OverLimit

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BOUNDARY = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))""", re.I)
_PARAMETER_FIELD = re.compile(rb"^(content-(?:type|disposition))[ \t]*:", re.I | re.M)
_ADDRESS_FIELDS = frozenset(
    {b"from", b"to", b"cc", b"bcc", b"reply-to", b"sender", b"resent-from", b"resent-to", b"resent-cc",
     b"resent-sender", b"return-path", b"disposition-notification-to"}
)


class Limits(Protocol):
    max_headers: int
    max_header_bytes: int
    max_addresses: int
    max_parts: int
    max_depth: int


def _fields(head: bytes) -> list[tuple[bytes, int]]:
    """(name, how many addresses it could hold) per header field of one header block."""
    out: list[tuple[bytes, int]] = []
    name, value = b"", bytearray()
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and name:
            value += line
            continue
        if name:
            out.append((name, max(value.count(b"@"), value.count(b",") + 1)))
        name, _, rest = line.partition(b":")
        name, value = name.strip().lower(), bytearray(rest)
    if name:
        out.append((name, max(value.count(b"@"), value.count(b",") + 1)))
    return out


def check(raw: RawMail, limits: Limits) -> None:
    """Raise ``OverLimit`` naming the first limit this mail is over."""
    m = _HEADER_END.search(raw, 0, limits.max_header_bytes + 4)
    head_end = m.start() if m else len(raw)
    if head_end > limits.max_header_bytes:
        raise OverLimit(f"over intake.limits.max_header_bytes: header block of {head_end} bytes")
    head = bytes(raw[:head_end])
    lines = head.count(b"\n") + 1
    if lines > limits.max_headers * 4:  # lines, before counting fields properly
        raise OverLimit(f"over intake.limits.max_headers: {lines} header lines")
    fields = _fields(head)
    if len(fields) > limits.max_headers:
        raise OverLimit(f"over intake.limits.max_headers: {len(fields)} header fields")
    for name, addresses in fields:
        if name in _ADDRESS_FIELDS and addresses > limits.max_addresses:
            field = name.decode("ascii", "replace")
            raise OverLimit(f"over intake.limits.max_addresses: about {addresses} addresses in {field}")
    boundaries = {a or b for a, b in _BOUNDARY.findall(raw)}
    if len(boundaries) > limits.max_parts:
        raise OverLimit(f"over intake.limits.max_parts: {len(boundaries)} multipart boundaries")
    if boundaries:
        delimiters = sum(raw.count(b"\n--" + b) for b in boundaries) - len(boundaries)
        if delimiters > limits.max_parts:
            raise OverLimit(f"over intake.limits.max_parts: about {delimiters} MIME parts")
    _check_parameters(raw, limits)


def _check_parameters(raw: RawMail, limits: Limits) -> None:
    """Parameters of any part's Content-Type or Content-Disposition: each costs the standard library's
    parser a pass over all the others (180,000 of them took 27 s), so they count like header fields."""
    for m in _PARAMETER_FIELD.finditer(raw):
        stop = raw.find(b"\n", m.end())
        while stop != -1 and raw[stop + 1 : stop + 2] in (b" ", b"\t"):  # folded onto the next line
            stop = raw.find(b"\n", stop + 1)
        count = raw.count(b";", m.end(), stop if stop != -1 else len(raw))
        if count > limits.max_headers:
            raise OverLimit(f"over intake.limits.max_headers: {count} parameters in one {m.group(1).decode()}")


def check_depth(depth: int, limits: Limits) -> None:
    if depth > limits.max_depth:
        raise OverLimit(f"over intake.limits.max_depth: parts nested {depth} deep")
