"""Large bodies go around the ``email`` parser, not through it.

The parser splits a body into one string per line and joins them again: a
24 MiB attachment cost about eight times its size in memory and seconds of
CPU, most of it for text that is only ever base64-decoded, and a 25 MB pasted
log as much. So before parsing, each long run of body lines (past the header
block, in a mail over a megabyte) is replaced by a short placeholder line, and
after parsing it is put back: an attachment's bytes are decoded straight from
the raw mail, and any other part (a text body, a part inside an attached mail,
a broken multipart that is read again) gets exactly the text the parser would
have given it.

A run is lines that are neither blank nor start with ``--`` (so no boundary is
ever hidden from the parser), that begins after a blank line (so it is in a
body, not a part's header block) with a line that does not look like a header
field (so an attached mail's own header block is never hidden either).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from mailgate.domain import RawMail

LIFT_FROM = 1 << 20  # smaller mails parse quickly enough as they are
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"^(?!--)[^\r\n]+\r?\n", re.M)  # a line of a run: not blank, not a boundary
_FIELD = re.compile(rb"[!-9;-~]+:")  # how a header field begins
MIN_RUN = 1 << 17  # runs shorter than this are left to the parser
_PLACEHOLDER = re.compile(r"!mailgate-lifted-(\d+)!(\r?\n)?")
_KEEP_WHOLE = ("text", "multipart", "message")  # parts whose text is read as text: given back as text


def _token(index: int) -> bytes:
    return b"!mailgate-lifted-%d!" % index


@dataclass
class Lifted:
    raw: RawMail
    spans: list[tuple[int, int]]
    direct: dict[int, tuple[int, int]] = field(default_factory=dict)  # id(part) -> span of its base64 body

    def data_of(self, part: Message) -> bytes | None:
        """The decoded body of an attachment whose base64 stayed in the raw mail, else None."""
        span = self.direct.get(id(part))
        return binascii.a2b_base64(memoryview(self.raw)[span[0] : span[1]]) if span else None

    def _text(self, match: re.Match[str]) -> str:
        start, end = self.spans[int(match.group(1))]
        if not match.group(2):  # the line end before a boundary belongs to the boundary
            end -= 2 if self.raw[end - 2 : end] == b"\r\n" else 1
        return self.raw[start:end].decode("ascii", "surrogateescape")  # as BytesParser decodes a mail

    def restore(self, msg: Message) -> None:
        stack: list[tuple[Message, bool]] = [(msg, False)]
        while stack:
            part, inside_mail = stack.pop()
            for name in ("preamble", "epilogue"):
                value = getattr(part, name, None)
                if isinstance(value, str) and "!mailgate-lifted-" in value:
                    setattr(part, name, _PLACEHOLDER.sub(self._text, value))
            payload: Any = getattr(part, "_payload", None)
            if isinstance(payload, list):
                attached = part.get_content_type() in ("message/rfc822", "message/global")
                stack.extend((sub, inside_mail or attached) for sub in payload if isinstance(sub, Message))
            elif isinstance(payload, str) and "!mailgate-lifted-" in payload:
                self._restore_leaf(part, payload, inside_mail)

    def _restore_leaf(self, part: Message, payload: str, inside_mail: bool) -> None:
        whole = _PLACEHOLDER.fullmatch(payload.strip())
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if whole and cte == "base64" and not inside_mail and part.get_content_maintype() not in _KEEP_WHOLE:
            self.direct[id(part)] = self.spans[int(whole.group(1))]
            return
        part.set_payload(_PLACEHOLDER.sub(self._text, payload))


def _runs(raw: RawMail, start: int) -> list[tuple[int, int]]:
    """Spans of consecutive body lines at least MIN_RUN long (one line at a time: a regex for the whole
    run keeps a backtracking mark per line and cost three times the mail in memory)."""
    spans: list[tuple[int, int]] = []
    run_start = run_end = -1

    def close() -> None:
        if run_end - run_start >= MIN_RUN and _opens_a_body(raw, run_start):
            spans.append((run_start, run_end))

    for m in _LINE.finditer(raw, start):
        if m.start() != run_end:
            close()
            run_start = m.start()
        run_end = m.end()
    close()
    return spans


def _opens_a_body(raw: RawMail, at: int) -> bool:
    """The run at ``at`` follows a blank line and does not begin like a header block."""
    before = raw[max(0, at - 4) : at]
    return (before.endswith(b"\n\n") or before.endswith(b"\n\r\n")) and not _FIELD.match(raw, at)


def lift(raw: RawMail) -> tuple[RawMail, Lifted | None]:
    """What to give the parser, and how to undo it (None: the mail as it is)."""
    if len(raw) < LIFT_FROM:
        return raw, None
    head = _HEADER_END.search(raw)
    if head is None:
        return raw, None
    spans = _runs(raw, head.end())
    if not spans:
        return raw, None
    pieces, at = [], 0
    for index, (start, end) in enumerate(spans):
        pieces += [raw[at:start], _token(index), b"\r\n"]
        at = end
    pieces.append(raw[at:])
    return b"".join(pieces), Lifted(raw, spans)
