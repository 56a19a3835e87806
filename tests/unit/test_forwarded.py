"""Reading the mail inside a forward (pipeline/forwarded.py, written_date.py): the markers and header
blocks of Gmail, Outlook, Apple Mail and Thunderbird in English, German, French, Spanish and Dutch, a
mail attached whole, nested forwards, and what is not a forward. Real forwards from other projects'
suites (tests/corpus/real/) are read too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailgate.domain import Address
from mailgate.pipeline.forwarded import dedupe_key, find, strip_prefixes
from mailgate.pipeline.parse import parse
from mailgate.pipeline.written_date import read_date
from tests.unit.test_config import problems, write

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
CET = timezone(timedelta(hours=1))
WHEN = datetime(2026, 11, 23, 10, 5, tzinfo=CET)


def mail(body: str, subject: str = "Fwd: Printer broken", *, headers: str = "") -> bytes:
    head = (f"From: Jane Doe <jane@example.com>\nTo: support@example.com\nSubject: {subject}\n"
            f"Date: Tue, 24 Nov 2026 09:00:00 +0100\nMessage-ID: <fwd-1@example.com>\n{headers}")
    return (head + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body).encode()


# (client, subject, body): each forwards Pat's mail of 23 Nov 2026 10:05 (CET), "Printer broken"
SAMPLES = [
    ("gmail en", "Fwd: Printer broken", """\
#ack
Customer writes about the printer.

---------- Forwarded message ---------
From: Pat Customer <pat@customer.example>
Date: Mon, Nov 23, 2026 at 10:05 AM
Subject: Printer broken
To: <jane@example.com>


The printer on floor 3 is broken.
"""),
    ("gmail de", "WG: Printer broken", """\
---------- Weitergeleitete Nachricht ---------
Von: Pat Customer <pat@customer.example>
Date: Mo., 23. Nov. 2026 um 10:05 Uhr
Subject: Printer broken
To: <jane@example.com>

The printer on floor 3 is broken.
"""),
    ("outlook en", "FW: Printer broken", """\
See below.

-----Original Message-----
From: Pat Customer <pat@customer.example>
Sent: Monday, November 23, 2026 10:05 AM
To: Jane Doe <jane@example.com>
Subject: Printer broken

The printer on floor 3 is broken.
"""),
    ("outlook de", "WG: Printer broken", """\
Bitte übernehmen.

-----Ursprüngliche Nachricht-----
Von: Pat Customer [mailto:pat@customer.example]
Gesendet: Montag, 23. November 2026 10:05
An: Jane Doe
Betreff: Printer broken

The printer on floor 3 is broken.
"""),
    ("new outlook de", "WG: Printer broken", """\
________________________________
Von: Pat Customer <pat@customer.example>
Gesendet: Montag, 23. November 2026 10:05
An: Jane Doe <jane@example.com>
Betreff: Printer broken

The printer on floor 3 is broken.
"""),
    ("outlook fr", "TR: Printer broken", """\
-----Message d'origine-----
De\u00a0: Pat Customer <pat@customer.example>
Envoyé\u00a0: lundi 23 novembre 2026 10:05
À\u00a0: Jane Doe
Objet\u00a0: Printer broken

The printer on floor 3 is broken.
"""),
    ("thunderbird fr", "Fwd: Printer broken", """\
-------- Message transféré --------
Sujet\u00a0: \tPrinter broken
Date\u00a0: \tMon, 23 Nov 2026 10:05:00 +0100
De\u00a0: \tPat Customer <pat@customer.example>
Pour\u00a0: \tJane Doe <jane@example.com>

The printer on floor 3 is broken.
"""),
    ("outlook es", "RV: Printer broken", """\
-----Mensaje original-----
De: Pat Customer <pat@customer.example>
Enviado el: lunes, 23 de noviembre de 2026 10:05
Para: Jane Doe <jane@example.com>
Asunto: Printer broken

The printer on floor 3 is broken.
"""),
    ("thunderbird es", "RV: Printer broken", """\
-------- Mensaje reenviado --------
Asunto: \tPrinter broken
Fecha: \tlun, 23 nov 2026 10:05
De: \tPat Customer <pat@customer.example>
Para: \tJane Doe <jane@example.com>

The printer on floor 3 is broken.
"""),
    ("outlook nl", "Doorst: Printer broken", """\
-----Oorspronkelijk bericht-----
Van: Pat Customer <pat@customer.example>
Verzonden: maandag 23 november 2026 10:05
Aan: Jane Doe <jane@example.com>
Onderwerp: Printer broken

The printer on floor 3 is broken.
"""),
    ("thunderbird nl", "Fwd: Printer broken", """\
-------- Doorgestuurd bericht --------
Onderwerp: \tPrinter broken
Datum: \t23-11-2026 10:05
Van: \tPat Customer <pat@customer.example>
Aan: \tJane Doe <jane@example.com>

The printer on floor 3 is broken.
"""),
    ("apple mail", "Fwd: Printer broken", """\
Begin forwarded message:

> From: Pat Customer <pat@customer.example>
> Subject: Printer broken
> Date: 23 November 2026 at 10:05:00 CET
> To: Jane Doe <jane@example.com>
>
> The printer on floor 3 is broken.
"""),
    ("apple mail de", "WG: Printer broken", """\
Anfang der weitergeleiteten Nachricht:

Von: Pat Customer <pat@customer.example>
Betreff: Printer broken
Datum: 23. November 2026 um 10:05:00 MEZ
An: Jane Doe <jane@example.com>

The printer on floor 3 is broken.
"""),
    ("thunderbird en, bold outlook fields", "Fwd: Printer broken", """\
-------- Forwarded Message --------
*From:* Pat Customer <pat@customer.example>
*Sent:* Monday, November 23, 2026 10:05 AM
*To:* Jane Doe <jane@example.com>
*Subject:* Printer broken

The printer on floor 3 is broken.
"""),
]


@pytest.mark.parametrize(("client", "subject", "body"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_each_client_and_language_gives_the_original(client: str, subject: str, body: str) -> None:
    found = find(parse(mail(body, subject)))
    assert found is not None, client
    original = found.original
    assert original.sender == Address("pat@customer.example", "Pat Customer")
    assert original.date == WHEN, original.date_text
    assert original.subject == "Printer broken"
    assert original.text.strip() == "The printer on floor 3 is broken."
    assert original.message_id is None and original.how.startswith("inline")
    assert "Forwarded" not in found.comment and "From" not in found.comment


def test_the_forwarders_own_words_are_the_comment() -> None:
    found = find(parse(mail(SAMPLES[0][2])))
    assert found is not None and found.comment == "#ack\nCustomer writes about the printer."


def test_outlooks_reply_block_is_no_forward_without_a_forward_subject() -> None:
    """Outlook writes the same block under a reply: only a FW:/WG:/TR:/RV: subject makes it a forward."""
    body = SAMPLES[2][2]
    assert find(parse(mail(body, "RE: Printer broken"))) is None
    assert find(parse(mail(body, "Printer broken"))) is None
    assert find(parse(mail(body, "FW: Printer broken"))) is not None


def test_plain_mail_and_a_marker_without_a_header_block_are_no_forward() -> None:
    assert find(parse(mail("Hello, my printer is broken.\n", "Printer"))) is None
    assert find(parse(mail("I got a\n---------- Forwarded message ---------\nthat was empty.\n"))) is None


def test_a_from_line_without_an_address_names_nobody() -> None:
    found = find(parse(mail("-----Original Message-----\nFrom: Customer, Pat\nSent: Monday, November 23, 2026"
                            " 10:05 AM\nSubject: Printer broken\n\nbroken\n", "FW: Printer broken")))
    assert found is not None and found.original.sender is None
    found = find(parse(mail("---------- Forwarded message ---------\nDate: Mon, Nov 23, 2026 at 10:05 AM\n"
                            "Subject: x\n\nno From line\n")))
    assert found is not None and found.original.sender is None


def test_names_in_raw_utf8_and_rfc2047_and_outlooks_mailto() -> None:
    for line, name in [
        ("From: Jürgen Müller <juergen@kunde.example>", "Jürgen Müller"),
        ("From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@kunde.example>", "Jürgen Müller"),
        ('Von: "Müller, Jürgen" [mailto:Juergen@Kunde.example]', "Müller, Jürgen"),
        ("From: juergen@kunde.example", ""),
    ]:
        body = f"---------- Forwarded message ---------\n{line}\nDate: Mon, Nov 23, 2026 at 10:05 AM\n\nHallo\n"
        found = find(parse(mail(body)))
        assert found is not None and found.original.sender == Address("juergen@kunde.example", name), line


def test_two_addresses_in_from_name_nobody() -> None:
    body = "---------- Forwarded message ---------\nFrom: a@x.example, b@y.example\nDate: Mon, Nov 23, 2026\n\nx\n"
    found = find(parse(mail(body)))
    assert found is not None and found.original.sender is None


def test_nested_forwards_are_all_read_outermost_first() -> None:
    body = """\
FYI

---------- Forwarded message ---------
From: Jerry Sys <jerry@example.com>
Date: Mon, Nov 23, 2026 at 11:00 AM
Subject: Fwd: Printer broken
To: <jane@example.com>

Can you take this?

---------- Forwarded message ---------
From: Pat Customer <pat@customer.example>
Date: Mon, Nov 23, 2026 at 10:05 AM
Subject: Printer broken
To: <jerry@example.com>

The printer on floor 3 is broken.
"""
    found = find(parse(mail(body)))
    assert found is not None
    chain = found.chain()
    assert [o.sender.email if o.sender else None for o in chain] == ["jerry@example.com", "pat@customer.example"]
    assert chain[0].subject == "Printer broken"  # Fwd: taken off
    assert chain[1].text.strip() == "The printer on floor 3 is broken."


def _attached(inner: bytes, outer_text: str = "See the attached mail.") -> bytes:
    return (
        b"From: Jane Doe <jane@example.com>\nTo: support@example.com\nSubject: Fwd: Printer broken\n"
        b"Message-ID: <fwd-2@example.com>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\n" + outer_text.encode() + b"\n--b\nContent-Type: message/rfc822\n"
        b"Content-Disposition: attachment; filename=original.eml\n\n" + inner + b"\n--b--\n"
    )


INNER = (
    b"From: =?ISO-8859-1?Q?J=FCrgen_M=FCller?= <juergen@kunde.example>\nTo: jane@example.com\n"
    b"Subject: Re: Drucker defekt\nDate: Mon, 23 Nov 2026 10:05:00 +0100\nMessage-ID: <orig-1@kunde.example>\n"
    b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=i\n\n--i\nContent-Type: text/plain\n\n"
    b"Der Drucker ist defekt.\n--i\nContent-Type: application/pdf\nContent-Disposition: attachment; "
    b"filename=scan.pdf\n\n%PDF-1.4\n--i--\n"
)


def test_an_attached_mail_is_read_whole_with_its_message_id_and_files() -> None:
    found = find(parse(_attached(INNER)))
    assert found is not None and found.comment == "See the attached mail."
    original = found.original
    assert original.how == "attached (message/rfc822)"
    assert original.sender == Address("juergen@kunde.example", "Jürgen Müller")
    assert original.date == WHEN and original.subject == "Re: Drucker defekt"
    assert original.message_id == "<orig-1@kunde.example>"
    assert "Der Drucker ist defekt." in original.text
    assert [a.filename for a in original.attachments] == ["scan.pdf"]


def test_two_attached_mails_are_not_guessed_between() -> None:
    raw = _attached(INNER).replace(b"\n--b--\n", b"\n--b\nContent-Type: message/rfc822\n\n" + INNER + b"\n--b--\n")
    found = find(parse(raw))
    assert found is None or found.original.how.startswith("inline")


def test_the_same_mail_gives_the_same_key_however_it_was_forwarded() -> None:
    keys = set()
    for _client, subject, body in SAMPLES:
        found = find(parse(mail(body, subject)))
        assert found is not None
        keys.add(dedupe_key(found.original))
    inner = INNER.replace(b"=?ISO-8859-1?Q?J=FCrgen_M=FCller?= <juergen@kunde.example>",
                          b"Pat Customer <pat@customer.example>").replace(b"Re: Drucker defekt", b"Fwd: Printer broken")
    attached = find(parse(_attached(inner)))
    assert attached is not None
    keys.add(dedupe_key(attached.original))
    assert len(keys) == 1 and None not in keys
    other = find(parse(mail(SAMPLES[0][2].replace("10:05 AM", "10:06 AM"))))
    assert other is not None and dedupe_key(other.original) not in keys


def test_subject_prefixes() -> None:
    assert strip_prefixes("Fwd: WG: TR: RV: Doorst: FW[2]: Printer") == "Printer"
    assert strip_prefixes("Fwd: Re: Printer") == "Re: Printer"
    assert strip_prefixes("Trouble: printer") == "Trouble: printer"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mon, Nov 23, 2026 at 10:05 PM", datetime(2026, 11, 23, 22, 5, tzinfo=CET)),
        ("Monday, November 23, 2026 12:30 AM", datetime(2026, 11, 23, 0, 30, tzinfo=CET)),
        ("Mon, 23 Nov 2026 10:05:00 -0500", datetime(2026, 11, 23, 10, 5, tzinfo=timezone(timedelta(hours=-5)))),
        ("Thu, 5 Mar 2026 09:00:00 GMT", datetime(2026, 3, 5, 9, 0, tzinfo=UTC)),
        ("Dienstag, 3. März 2026 09:00", datetime(2026, 3, 3, 9, 0, tzinfo=CET)),
        ("mar. 3 mars 2026 à 09h00", datetime(2026, 3, 3, 9, 0, tzinfo=CET)),
        ("martes, 3 de marzo de 2026 9:00", datetime(2026, 3, 3, 9, 0, tzinfo=CET)),
        ("di 3 mrt. 2026 om 09:00", datetime(2026, 3, 3, 9, 0, tzinfo=CET)),
        ("2026-03-03 09:00", datetime(2026, 3, 3, 9, 0, tzinfo=CET)),
        ("03/04/2026 09:00", datetime(2026, 4, 3, 9, 0, tzinfo=CET)),  # day first unless told otherwise
        ("31 February 2026 10:00", None),
        ("2009年4月28日 23:45:01:JST", None),
        ("", None),
    ],
)
def test_written_dates(text: str, expected: datetime | None) -> None:
    assert read_date(text, CET) == expected


def test_an_english_from_line_reads_a_numeric_date_month_first() -> None:
    assert read_date("03/04/2026 09:00", CET, month_first=True) == datetime(2026, 3, 4, 9, 0, tzinfo=CET)


# Real forwards of other projects' suites (licences: tests/corpus/README.md, real/MANIFEST.yaml)
@pytest.mark.parametrize(
    ("path", "sender", "subject", "how", "says"),
    [
        ("real/django-helpdesk/thunderbird-czech-forward.eml", "nikola@example.cz",
         "Cyklozaměstnavatel - změna vyhodnocení", "inline (Forwarded Message)", "Ahoj Johne"),
        ("real/rt/communigate-redirect-forward.eml", "1stwizard@isp.example.com",
         "[DEMOS #12148] scanning my ports", "inline (Forwarded Message)", "appears to have no content"),
        ("real/flanker/thunderbird-forward-as-attachment.eml", "dan@example.com", "Thanks!",
         "attached (message/rfc822)", "kicking ass"),
        ("real/mikel-mail/apple-mail-forwarded-rfc822.eml", "xxxx@xxxx.com", "Another PDF",
         "attached (message/rfc822)", "another PDF"),
        ("forwarded-message-rfc822.eml", "billing@vendor.example", "Your invoice 2026-031",
         "attached (message/rfc822)", "INNER-BODY-SECRET"),
        # Apple Mail quotes the forwarded mail; its From has no address (MAILER-DAEMON): nobody to name
        ("real/sisimai/human-forwards-a-bounce.eml", None, "Returned mail: see transcript for details",
         "inline (Begin forwarded message)", "The original message was received"),
    ],
)
def test_real_forwards(path: str, sender: str | None, subject: str, how: str, says: str) -> None:
    found = find(parse((CORPUS / path).read_bytes()))
    assert found is not None
    original = found.original
    assert (original.sender.email if original.sender else None) == sender
    assert original.subject == subject and original.how == how and says in original.text


def test_a_real_reply_with_outlooks_block_is_no_forward() -> None:
    raw = (CORPUS / "real/django-helpdesk/thunderbird-forward-original-message.eml").read_bytes()
    assert find(parse(raw)) is None  # "-----Original Message-----" under a subject without FW:


def test_ack_forwarded_must_be_a_boolean_and_names_its_line(tmp_path: Path) -> None:
    rules = "help_topics:\n  - name: General\n    department: Support\n    ack_forwarded: sometimes\n"
    path = write(tmp_path, rules=rules)
    found = problems(path)
    line = 4
    assert any(p.startswith(f"{path.parent / 'rules.yaml'}:{line}: ") and "ack_forwarded" in p for p in found), found
