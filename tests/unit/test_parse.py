"""parse(): bytes -> ParsedMail over the named corpus (tests/corpus/README.md says what each file shows)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from mailgate.errors import ParseError
from mailgate.pipeline.parse import parse

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
ALL = sorted(CORPUS.glob("*.eml"))


def corpus(name: str) -> bytes:
    return (CORPUS / f"{name}.eml").read_bytes()


def test_the_corpus_is_there() -> None:
    assert len(ALL) >= 23


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_every_corpus_mail_parses_into_storable_text(path: Path) -> None:
    mail = parse(path.read_bytes())
    assert mail.sha256 and len(mail.sha256) == 64
    # everything must be storable as UTF-8 text (PostgreSQL refuses NUL and lone surrogates)
    strings = [mail.subject, mail.text, mail.new_text, mail.html or ""]
    strings += [a.email + a.name for a in (*mail.to, *mail.cc, *mail.reply_to)]
    strings += [mail.from_addr.email + mail.from_addr.name] if mail.from_addr else []
    strings += [a.filename for a in mail.attachments] + [v for _, v in mail.raw_headers]
    for s in strings:
        s.encode("utf-8")
        assert "\x00" not in s
    assert "\r" not in mail.text


# --------------------------------------------------------------------------- headers
def test_rfc2047_subject_and_display_name_are_decoded() -> None:
    mail = parse(corpus("utf8-subject"))
    assert mail.subject == "Drucker brennt – Büro 3 🔥 bitte schnell"
    assert mail.from_addr is not None
    assert mail.from_addr.name == "Jürgen Müller"
    assert mail.from_addr.email == "juergen.mueller@beispiel.de"


def test_latin1_encoded_words_are_decoded() -> None:
    mail = parse(corpus("latin1-body"))
    assert mail.subject == "Problème d'impression"
    assert mail.from_addr is not None and mail.from_addr.name == "François Bérard"


def test_raw_8bit_header_bytes_become_readable_text() -> None:
    mail = parse(corpus("8bit-header-junk"))
    assert mail.subject == "Rückfrage zur Rechnung – dringend"  # latin-1 ü and a UTF-8 dash in one header
    assert mail.from_addr is not None
    assert mail.from_addr.name == "Jürgen Grüßer"
    assert mail.from_addr.email == "juergen@junk.example"
    custom = dict(mail.raw_headers)["X-Custom"]
    assert "\x00" not in custom and custom.endswith("junk")


def test_addresses_are_lower_cased_and_names_kept() -> None:
    mail = parse(corpus("outlook-reply"))
    assert mail.from_addr is not None
    assert mail.from_addr.email == "john.miller@contoso.com"
    assert mail.from_addr.name == "Miller, John"
    assert [a.email for a in mail.to] == ["support@example.com"]


def test_comma_in_encoded_display_name_does_not_split_the_address() -> None:
    mail = parse(corpus("german-outlook-reply"))
    assert mail.from_addr is not None
    assert (mail.from_addr.name, mail.from_addr.email) == ("Müller, Hans", "hans.mueller@beispiel.de")


def test_message_id_in_reply_to_and_references() -> None:
    mail = parse(corpus("outlook-reply"))
    assert mail.message_id == "<DB9PR04MB84128F0A2C61D4C1B2E9E1B3E3A52@DB9PR04MB8412.eurprd04.prod.outlook.com>"
    assert mail.in_reply_to == ("<mg.17.abcdefgh.abcdef.abcdefghabcdefgh@example.com>",)
    assert mail.references == (
        "<CAOutlook-first-482913@mail.contoso.com>",
        "<mg.17.abcdefgh.abcdef.abcdefghabcdefgh@example.com>",
    )


def test_missing_message_id_and_missing_from_are_none() -> None:
    assert parse(corpus("no-message-id")).message_id is None
    no_from = parse(corpus("no-from"))
    assert no_from.from_addr is None
    assert no_from.subject == "Message from the web form"
    assert "Do you ship to Norway?" in no_from.text


def test_bare_message_id_without_brackets_is_kept() -> None:
    mail = parse(b"From: a@b.example\nMessage-ID: 12345.abc@legacy.example\nSubject: x\n\nbody\n")
    assert mail.message_id == "<12345.abc@legacy.example>"


def test_absurdly_long_ids_are_dropped_and_references_capped() -> None:
    huge = "<" + "x" * 2000 + "@example.com>"
    refs = " ".join(f"<r{i}@example.com>" for i in range(500))
    raw = f"From: a@b.example\nMessage-ID: {huge}\nReferences: {refs}\nSubject: x\n\nbody\n".encode()
    mail = parse(raw)
    assert mail.message_id is None
    assert len(mail.references) == 100
    assert mail.references[-1] == "<r499@example.com>"  # the newest ones are the useful ones


def test_date_is_timezone_aware_and_a_bad_date_is_none() -> None:
    mail = parse(corpus("outlook-reply"))
    assert mail.date is not None and mail.date.utcoffset() is not None
    assert mail.date.isoformat() == "2026-03-10T09:15:22+00:00"
    assert parse(b"From: a@b.example\nDate: the day after tomorrow\n\nx\n").date is None
    assert parse(b"From: a@b.example\nDate: Tue, 10 Mar 99999 09:15:22 +0000\n\nx\n").date is None


# --------------------------------------------------------------------------- bodies
def test_text_part_is_preferred_over_html() -> None:
    mail = parse(corpus("multipart-alternative"))
    assert mail.text.strip() == "Please change our invoice address to 12 Main Street."
    assert "HIDDEN HTML ONLY" not in mail.text
    assert mail.html is not None and "<b>12 Main Street</b>" in mail.html


def test_text_is_derived_from_html_when_there_is_no_text_part() -> None:
    mail = parse(corpus("html-only"))
    assert "my order 5531 arrived & the box was crushed." in mail.text
    assert "- mug: broken\n- plate: fine" in mail.text
    assert "> Earlier message: shipped on Monday" in mail.text
    for leaked in ("document.location", "color: red", "tracker.example", "Order 5531\n"):
        assert leaked not in mail.text


def test_stored_html_is_sanitised() -> None:
    mail = parse(corpus("html-only"))
    assert mail.html is not None
    html = mail.html.lower()
    for active in ("<script", "document.cookie", "onclick", "onerror", "<style", "tracker.example"):
        assert active not in html, active
    assert '<a href="https://shop.example/orders/5531"' in mail.html
    assert "noopener" in mail.html


def test_line_endings_are_normalised() -> None:
    mail = parse(corpus("outlook-reply"))  # CRLF on the wire, quoted-printable soft breaks
    assert "\r" not in mail.text
    assert "Can someone come by before noon?" in mail.text


def test_iso_8859_1_quoted_printable_body() -> None:
    mail = parse(corpus("latin1-body"))
    assert "l'imprimante du 3ème étage ne répond plus. Grüße aus Köln," in mail.text


def test_unknown_charset_falls_back_without_losing_text() -> None:
    mail = parse(corpus("unknown-charset"))
    assert mail.text.strip() == "My invoice shows 30 € too much. Grüße"


def test_nul_characters_never_reach_the_text() -> None:
    mail = parse(b"From: a@b.example\nSubject: nul\x00here\nContent-Type: text/plain\n\nbefore\x00after\n")
    assert mail.text.strip() == "beforeafter"
    assert "\x00" not in mail.subject


def test_malformed_mime_keeps_the_words_and_the_attachment() -> None:
    mail = parse(corpus("malformed-mime"))
    assert mail.defects  # the parser noticed
    assert "error 0x80070005" in mail.text
    assert [(a.filename, a.content_type) for a in mail.attachments] == [("shot.png", "image/png")]
    assert mail.attachments[0].data.startswith(b"\x89PNG")


def test_multipart_without_any_boundary_line_is_read_as_text() -> None:
    raw = (
        b"From: a@b.example\nSubject: x\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="nowhere"\n\nJust words, no parts.\n'
    )
    mail = parse(raw)
    assert mail.text.strip() == "Just words, no parts."
    assert mail.attachments == ()


# --------------------------------------------------------------------------- attachments
def test_attachment_names_are_decoded_and_sanitised() -> None:
    mail = parse(corpus("attachment-rfc2231-filename"))
    names = [a.filename for a in mail.attachments]
    assert names[0] == "Übersicht März.pdf"  # RFC 2231 continuation + percent-encoding
    assert names[1] == "passwd"  # "../../etc/passwd" loses its path
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert mail.text.strip() == "Both files attached."  # the text/plain *attachment* is not body text
    assert "root:x:0:0" not in mail.text


def test_attachment_bytes_hash_and_size() -> None:
    mail = parse(corpus("attachment-rfc2231-filename"))
    pdf = mail.attachments[0]
    assert pdf.content_type == "application/pdf"
    assert pdf.data.startswith(b"%PDF-1.4")
    assert pdf.sha256 == hashlib.sha256(pdf.data).hexdigest()
    assert pdf.size == len(pdf.data) == 82
    assert not pdf.inline


def test_winmail_dat_is_unpacked() -> None:
    mail = parse(corpus("winmail-dat"))
    got = {a.filename: a for a in mail.attachments}
    assert set(got) == {"Quarterly report.txt", "Übersicht März.csv"}  # long (Unicode) names from MAPI
    assert got["Quarterly report.txt"].data == b"Revenue up, printer budget down.\r\n"
    assert got["Quarterly report.txt"].content_type == "text/plain"
    assert got["Übersicht März.csv"].data == "Monat;Drucker\r\nMärz;1\r\n".encode("cp1252")
    for att in got.values():
        assert att.sha256 == hashlib.sha256(att.data).hexdigest()


def test_an_invalid_winmail_dat_is_kept_as_it_is() -> None:
    junk = b"this is not TNEF at all"
    raw = (
        b"From: a@b.example\nSubject: x\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nsee attached\n'
        b'--b\nContent-Type: application/ms-tnef; name="winmail.dat"\nContent-Transfer-Encoding: base64\n\n'
        + base64.encodebytes(junk)
        + b"--b--\n"
    )
    mail = parse(raw)
    assert [(a.filename, a.data) for a in mail.attachments] == [("winmail.dat", junk)]


def test_forwarded_message_stays_an_attachment() -> None:
    mail = parse(corpus("forwarded-message-rfc822"))
    assert "INNER-BODY-SECRET" not in mail.text
    assert mail.text.strip() == "See the attached mail, the amount is wrong."
    assert mail.message_id == "<fwd-2026-031@customer.example>"  # the outer mail's, not the inner one's
    [att] = mail.attachments
    assert (att.filename, att.content_type) == ("Your invoice 2026-031.eml", "message/rfc822")
    assert b"INNER-BODY-SECRET" in att.data and b"Message-ID: <invoice-2026-031@vendor.example>" in att.data


def test_dsn_final_recipients() -> None:
    mail = parse(corpus("dsn-bounce"))
    assert mail.content_type == "multipart/report"
    headers = dict(mail.auto_headers)
    assert headers["x-mailgate-dsn-recipients"] == "gone.user@customer.example,old.boss@customer.example"
    assert headers["return-path"] == "<>"
    assert "could not\nbe delivered" in mail.text
    assert [a.content_type for a in mail.attachments] == ["text/rfc822-headers"]


# --------------------------------------------------------------------------- our own headers
def test_x_mailgate_headers_are_stripped_and_the_loop_token_captured() -> None:
    mail = parse(corpus("forged-mailgate-header"))
    assert not [k for k, _ in mail.raw_headers if k.lower().startswith("x-mailgate-")]
    assert mail.loop_token == "example.com; aaaaaaaaaaaaaaaa"
    assert "x-mailgate-dsn-recipients" not in dict(mail.auto_headers)


def test_a_forged_dsn_recipient_header_cannot_be_injected() -> None:
    raw = b"From: a@b.example\nX-Mailgate-Dsn-Recipients: victim@example.com\nSubject: x\n\nbody\n"
    mail = parse(raw)
    assert "x-mailgate-dsn-recipients" not in dict(mail.auto_headers)


# --------------------------------------------------------------------------- content hash
def _transported(raw: bytes, *, hop: str) -> bytes:
    """The same mail as another route delivers it: other transport headers, LF line ends."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not re.match(rb"(?i)(delivered-to|return-path):", ln)]
    extra = [
        f"Return-Path: <bounce-{hop}@gmail.com>".encode(),
        f"Delivered-To: {hop}@example.com".encode(),
        f"Received: from relay-{hop}.example.net by imap.example.com".encode(),
        b"\tfor <outage@example.com>; Wed, 11 Mar 2026 01:00:00 +0000",
    ]
    return b"\n".join([*extra, *lines]) + b"\n\n" + body.replace(b"\r\n", b"\n")


def test_same_mail_by_two_routes_has_the_same_content_hash() -> None:
    raw = corpus("gmail-reply")
    assert b"\r\n" in raw
    other = _transported(raw, hop="second")
    assert other != raw
    assert parse(other).sha256 == parse(raw).sha256


def test_content_hash_ignores_what_mail_stores_add() -> None:
    raw = corpus("thunderbird-reply")
    head, _, body = raw.partition(b"\n\n")
    stored = head + b"\nStatus: RO\nX-Status: A\nX-UID: 4711\nX-Keywords: $Forwarded\nX-Spam-Flag: NO\n"
    stored += b"X-Spam-Report: score=-0.1\n\tBAYES_00\n\n" + body + b"\n\n"
    assert parse(stored).sha256 == parse(raw).sha256


def test_content_hash_changes_with_content() -> None:
    raw = corpus("gmail-reply")
    base = parse(raw).sha256
    assert parse(raw.replace(b"unplugged it for a minute", b"unplugged it for an hour")).sha256 != base
    assert parse(raw.replace(b"Subject: Re: [#482913]", b"Subject: Re: [#482914]")).sha256 != base


def test_content_hash_ignores_a_forged_loop_header() -> None:
    raw = corpus("no-message-id")
    forged = raw.replace(b"Subject:", b"X-Mailgate-Loop: example.com; zzzz\nSubject:", 1)
    assert parse(forged).sha256 == parse(raw).sha256


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n", b"\n"])
def test_empty_input_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError, match="empty"):
        parse(raw)


def test_text_without_any_header_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="no headers"):
        parse(b"hello, this is not a mail at all\nsecond line\n")
