"""Large base64 bodies that go around the parser come back exactly as the parser would have given them.

Each case is a mail over the lifting threshold, parsed by ``parse`` (which lifts) and read directly
with the ``email`` parser and the same body walk (which does not); everything a ticket keeps must
be identical: text, html, every attachment's bytes, name and type, and the content hash.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
from email import policy
from email.parser import BytesParser

import pytest

from mailgate import bigparts
from mailgate.mime import bodies_and_attachments, content_hash
from mailgate.pipeline.parse import parse

PAYLOAD = os.urandom(1 << 20) + b"tail"


def _b64(data: bytes, eol: str) -> str:
    return base64.encodebytes(data).decode().replace("\n", eol)


def _multipart(eol: str = "\r\n", *, inner: str = "", text_b64: bool = False, preamble: str = "") -> bytes:
    b64 = _b64(PAYLOAD, eol)
    text = _b64(("Grüße " * 40000).encode(), eol) if text_b64 else "Hello, see the file."
    cte = "base64" if text_b64 else "8bit"
    lines = [
        "From: Pat <pat@customer.example>", "To: support@example.com", "Subject: big", "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="zz"', "", preamble + "--zz",
        f"Content-Type: text/plain; charset=utf-8{eol}Content-Transfer-Encoding: {cte}", "", text, "--zz",
        'Content-Type: application/pdf; name="report.pdf"', "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="report.pdf"', "", b64 + "--zz",
    ]
    if inner:
        lines += ["Content-Type: message/rfc822", "", inner + "--zz"]
    lines[-1] += "--"
    return (eol.join(lines) + eol).encode()


def _attached_mail(eol: str) -> str:
    return eol.join([
        "From: a@b.example", "Subject: forwarded", 'Content-Type: multipart/mixed; boundary="in"', "", "--in",
        "Content-Type: text/plain", "", "inner text", "--in", "Content-Type: application/zip",
        "Content-Transfer-Encoding: base64", "", _b64(PAYLOAD[:300000], eol) + "--in--", "",
    ])


CASES = {
    "crlf": _multipart(),
    "lf": _multipart("\n"),
    "base64-text-body": _multipart(text_b64=True),
    "attached-mail": _multipart(inner=_attached_mail("\r\n")),
    "run-in-preamble": _multipart(preamble=_b64(PAYLOAD[:200000], "\r\n")),
    "single-part": (
        "From: pat@customer.example\r\nSubject: one\r\nContent-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + _b64(PAYLOAD, "\r\n")
    ).encode(),
    "base64-looking-7bit": (
        "From: pat@customer.example\r\nSubject: one\r\nContent-Type: text/plain\r\n\r\n"
        + _b64(PAYLOAD, "\r\n")
    ).encode(),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lifted_parse_equals_the_parsers_own(name: str) -> None:
    raw = CASES[name]
    assert len(raw) >= bigparts.LIFT_FROM
    given, lifted = bigparts.lift(raw)
    assert lifted is not None and len(given) < len(raw) // 2, "the case does not exercise lifting"
    parsed = parse(raw)
    text, html, attachments, _ = bodies_and_attachments(BytesParser(policy=policy.compat32).parsebytes(raw))
    assert parsed.text == (text or "")
    assert parsed.html == html
    assert [(a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        (a.filename, a.content_type, a.data) for a in attachments
    ]


def test_small_mails_are_not_lifted() -> None:
    raw = _multipart().replace(_b64(PAYLOAD, "\r\n").encode(), b"QUJD\r\n")
    assert bigparts.lift(raw) == (raw, None)


def _hash_in_one_piece(raw: bytes) -> str:
    """The content hash as one copy of the whole body would compute it (the definition)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    kept = b"\n".join(line for line in head.replace(b"\r\n", b"\n").split(b"\n") if not line.startswith(b"Received"))
    return hashlib.sha256(kept + b"\n\n" + body.replace(b"\r\n", b"\n").rstrip(b"\n")).hexdigest()


def test_content_hash_streams_the_body_alike() -> None:
    """The body is hashed in 1 MiB slices; a CRLF split between slices, or trailing line ends, must hash
    as one piece would."""
    rnd = random.Random(7)
    pieces = [b"a", b"\r", b"\n", b"\r\n", b" y", b"\r\n\r\n", b"."]
    for _ in range(12):
        chunk = b"".join(rnd.choice(pieces) for _ in range(4000))
        body = chunk * (rnd.randint(250, 700)) + b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 30)))
        raw = b"From: a@b.c\r\nReceived: by relay\r\n\r\n" + body
        assert content_hash(raw) == _hash_in_one_piece(raw)
    edge = b"From: a@b.c\r\n\r\n" + b"y" * ((1 << 20) - 1) + b"\r\n" + b"z" * 10 + b"\r\n\r\n\n"
    assert content_hash(edge) == _hash_in_one_piece(edge)
