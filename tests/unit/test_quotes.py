"""split_new_text: the customer's new words, without the quoted history their client appended
(and, through parse, without their signature or closing: see test_signature.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.pipeline.parse import parse
from mailgate.pipeline.quotes import REPLY_MARKER, split_new_text

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gmail-reply", "Thanks, it works again after I unplugged it for a minute.\n\nPat"),
        (
            "outlook-reply",
            "Hi,\n\nthe printer is still smoking after the restart. Can someone come by before noon?",
        ),
        (
            "german-outlook-reply",
            "Hallo,\n\nder Drucker raucht immer noch. Bitte schicken Sie einen Techniker.",
        ),
        ("apple-mail-reply", "The toner cartridge was the culprit — all good now.\n\nSam"),
        ("thunderbird-reply", "Still broken here, see the photo I sent yesterday.\n\nAlex"),
    ],
)
def test_corpus_replies_keep_only_the_new_text(name: str, expected: str) -> None:
    mail = parse((CORPUS / f"{name}.eml").read_bytes())
    assert mail.new_text == expected
    assert len(mail.text) > len(mail.new_text)  # the quote is still in the full text


def test_gmail_single_line_attribution() -> None:
    text = "Works now.\n\nOn Mon, Mar 9, 2026 at 4:02 PM Support <support@example.com> wrote:\n> old\n> text\n"
    assert split_new_text(text) == "Works now."


def test_gmail_attribution_wrapped_over_two_lines() -> None:
    text = "Works now.\n\nOn Mon, Mar 9, 2026 at 4:02 PM Example Support <\nsupport@example.com> wrote:\n\n> old\n"
    assert split_new_text(text) == "Works now."


def test_outlook_english_header_block() -> None:
    text = (
        "Still broken.\n\nFrom: Example Support <support@example.com>\nSent: Monday, March 9, 2026 4:02 PM\n"
        "To: John\nSubject: [#482913] Printer on fire\n\nHello John,\n"
    )
    assert split_new_text(text) == "Still broken."


def test_outlook_original_message_separator() -> None:
    text = "See below.\n\n-----Original Message-----\nFrom: Support\nSent: today\n\nold\n"
    assert split_new_text(text) == "See below."


def test_outlook_german_header_block_and_separator() -> None:
    text = (
        "Danke.\n\nVon: Example Support <support@example.com>\nGesendet: Montag, 9. März 2026 16:02\n"
        "An: Hans\nBetreff: Drucker\n\nalt\n"
    )
    assert split_new_text(text) == "Danke."
    assert split_new_text("Danke.\n-----Ursprüngliche Nachricht-----\nVon: x\n") == "Danke."


def test_german_attribution_with_name_after_schrieb() -> None:
    text = "Passt.\n\nAm 09.03.2026 um 16:02 schrieb Example Support <support@example.com>:\n> alt\n"
    assert split_new_text(text) == "Passt."


def test_french_attribution() -> None:
    assert split_new_text("Merci.\n\nLe 9 mars 2026 à 16:02, Support a écrit :\n> vieux\n") == "Merci."


def test_apple_mail_quoted_attribution() -> None:
    text = "All good.\n\n> On 9. Mar 2026, at 16:02, Example Support <support@example.com> wrote:\n> \n> old\n"
    assert split_new_text(text) == "All good."


def test_thunderbird_attribution() -> None:
    text = "Still broken.\n\nOn 09/03/2026 16:02, Example Support wrote:\n> -- Reply above this line --\n> old\n"
    assert split_new_text(text) == "Still broken."


def test_our_reply_marker_cuts_even_without_a_client_quote() -> None:
    text = f"Here is the serial number: 4711.\n\n{REPLY_MARKER}\n\nHello Pat,\nthank you for contacting us.\n"
    assert split_new_text(text) == "Here is the serial number: 4711."
    assert split_new_text(f"ok\n{REPLY_MARKER.upper()}\nold") == "ok"


def test_text_without_a_quote_is_unchanged() -> None:
    text = "Line one.\n\nLine two with > in the middle and From: in the middle.\n-- \nPat\n"
    assert split_new_text(text) == text.strip()


def test_a_customer_line_starting_with_from_is_not_a_quote_header() -> None:
    text = "Hello,\nFrom: my experience the printer overheats after an hour.\nCan you check?\n"
    assert split_new_text(text) == text.strip()


def test_inline_answers_between_quotes_are_kept() -> None:
    text = "Answers inline.\n> Which model?\nThe LX-200.\n> Since when?\nSince Monday.\n"
    assert split_new_text(text) == text.strip()


def test_bottom_quote_after_inline_answers_is_cut() -> None:
    text = "Top.\n> q1\nanswer\n\n> rest of\n> the old mail\n"
    assert split_new_text(text) == "Top.\n> q1\nanswer"


def test_a_quote_on_the_first_line_is_not_cut_to_nothing() -> None:
    text = "> only a quote\n> nothing new\n"
    assert split_new_text(text) == text.strip()


def test_long_quoted_history_is_cut() -> None:
    quoted = "\n".join(f"> old line {i}" for i in range(50_000))
    assert split_new_text(f"new words\n{quoted}") == "new words"


def test_an_english_sentence_ending_in_a_colon_is_not_an_attribution() -> None:
    text = "Hello,\nOn Monday the admin wrote this to the log:\n  disk full\nPlease help.\n"
    assert split_new_text(text) == text.strip()
