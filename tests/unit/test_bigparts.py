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
from mailgate.domain import ParsedMail
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


LOG = "".join(f"2026-03-02 10:{i % 60:02d}:00 worker-{i % 7} ERROR Zürich gateway reset (retry {i})\n"
              for i in range(20000))


def _head(ctype: str, extra: str = "", eol: str = "\r\n") -> str:
    return eol.join(["From: pat@customer.example", "To: support@example.com", "Subject: big body",
                     "MIME-Version: 1.0", f"Content-Type: {ctype}", *([extra] if extra else []), "", ""])


def _qp_html() -> bytes:
    rows = "".join(f"<tr><td class=3D\"c\">row {i} caf=C3=A9 r=C3=A9sum=C3=A9 and a long line that goes on=\r\n"
                   f" and on</td></tr>\r\n" for i in range(15000))
    return (_head("text/html; charset=utf-8", "Content-Transfer-Encoding: quoted-printable")
            + "<html><body><table>\r\n" + rows + "</table></body></html>\r\n").encode()


def _alternative() -> bytes:
    html = "".join(f"<p>line {i} of the report</p>\r\n" for i in range(40000))
    return (_head('multipart/alternative; boundary="alt"') + "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "\r\n" + LOG.replace("\n", "\r\n") + "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            + html + "--alt--\r\n").encode()


def _attached_big_text() -> bytes:
    trace = "".join(f"Received: from relay{i}.example by mx.example; Mon, 2 Mar 2026 10:00:00 +0000\r\n"
                    for i in range(2500))  # a header block longer than a run: it must stay with the parser
    inner = (trace + "From: a@b.example\r\nSubject: the log\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
             + LOG.replace("\n", "\r\n"))
    return (_head('multipart/mixed; boundary="zz"') + "--zz\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
            "--zz\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "--zz--\r\n").encode()


CASES.update({
    "text-log-crlf": (_head("text/plain; charset=utf-8") + LOG.replace("\n", "\r\n")).encode(),
    "text-log-lf": (_head("text/plain; charset=utf-8", eol="\n") + LOG).encode(),
    "latin-1-8bit": (_head("text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: 8bit").encode()
                     + LOG.replace("\n", "\r\n").encode("iso-8859-1")),
    "qp-html": _qp_html(),
    "alternative-runs-end-at-boundaries": _alternative(),
    "attached-mail-with-a-big-body": _attached_big_text(),
})
# mails over the threshold whose bodies must stay with the parser, in part or whole
UNLIFTABLE = {
    "header-like-first-line": (_head("text/plain; charset=utf-8") + "Note: the log follows\r\n"
                               + LOG.replace("\n", "\r\n")).encode(),
    "short-paragraphs": (_head("text/plain; charset=utf-8")
                         + "".join(f"Paragraph {i}, line one.\r\nLine two.\r\n\r\n" for i in range(60000))).encode(),
    "boundary-like-lines": (_head("text/plain; charset=utf-8") + "".join(
        f"-- separator {i}\r\n{LOG[:2000]}" for i in range(700)).replace("\n", "\r\n")).encode(),
}


def _unlifted(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> ParsedMail:
    """What ``parse`` gives when nothing goes around the parser: the oracle."""
    with monkeypatch.context() as m:
        m.setattr(bigparts, "LIFT_FROM", 1 << 62)
        return parse(raw)


@pytest.mark.parametrize("name", sorted(UNLIFTABLE))
def test_bodies_that_stay_with_the_parser_still_parse_alike(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = UNLIFTABLE[name]
    assert len(raw) >= bigparts.LIFT_FROM
    assert parse(raw) == _unlifted(raw, monkeypatch)


def test_an_attached_mails_header_block_is_never_lifted() -> None:
    raw = CASES["attached-mail-with-a-big-body"]
    given, lifted = bigparts.lift(raw)
    assert lifted is not None and b"Subject: the log" in given  # its body lifted, its header block not


@pytest.mark.parametrize("name", sorted(CASES))
def test_lifted_parse_equals_the_parsers_own(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = CASES[name]
    assert len(raw) >= bigparts.LIFT_FROM
    given, lifted = bigparts.lift(raw)
    assert lifted is not None and len(given) < len(raw) // 2, "the case does not exercise lifting"
    parsed = parse(raw)
    assert parsed == _unlifted(raw, monkeypatch)  # every field a ticket keeps, attachments' bytes included
    text, _html, attachments, _ = bodies_and_attachments(BytesParser(policy=policy.compat32).parsebytes(raw))
    assert [(a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        (a.filename, a.content_type, a.data) for a in attachments
    ]
    if text is not None:
        assert parsed.text == text


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
