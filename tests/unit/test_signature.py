"""Signatures come off the stored text; nothing else does (the words are never lost)."""

from __future__ import annotations

import pytest

from mailgate.pipeline.parse import parse
from mailgate.pipeline.signature import strip_signature

SIGNED = {
    "rfc3676 delimiter": ("Thanks, it works now.\n\n-- \nPat Customer\nACME Corp\n+1 555 0100\n",
                          "Thanks, it works now."),
    "iphone": ("Thanks, it works now.\n\nSent from my iPhone\n", "Thanks, it works now."),
    "android": ("The printer is fixed.\n\nSent from my Galaxy\n", "The printer is fixed."),
    "outlook mobile": ("See you tomorrow.\n\nGet Outlook for Android\n", "See you tomorrow."),
    "closing and name": ("It is still broken.\n\nBest regards,\nPat\n", "It is still broken."),
    "german": ("Hallo,\nes geht nicht.\n\nMit freundlichen Grüßen\nPat\n\nVon meinem iPhone gesendet\n",
               "Hallo,\nes geht nicht."),
}


@pytest.mark.parametrize("case", sorted(SIGNED))
def test_a_signature_comes_off(case: str) -> None:
    text, kept = SIGNED[case]
    assert strip_signature(text) == kept


@pytest.mark.parametrize("text", [
    "Hi,\n\nmy printer is broken -- it prints blank pages.\n",  # a dash in the words is not a delimiter
    "Sent from my iPhone\n",  # nothing but a signature: kept, not emptied
    "Please see below.\n\n---------- Forwarded message ---------\nFrom: Boss <b@x.example>\nDate: Mon\n"
    "Subject: x\nTo: me\n\nThe server is down.\n",  # a forwarded mail in a new ticket stays whole
])
def test_no_signature_or_nothing_else_is_cut(text: str) -> None:
    assert strip_signature(text).strip() == text.strip()


def test_parse_strips_it_from_the_new_text_and_the_whole_text() -> None:
    raw = (b"From: pat@customer.example\r\nTo: support@example.com\r\nSubject: Re: [#123456] Printer\r\n\r\n"
           b"Still broken.\r\n\r\n-- \r\nPat\r\nACME\r\n\r\n"
           b"On Mon, 2 Mar 2026, Support <support@example.com> wrote:\r\n> Try again.\r\n")
    parsed = parse(raw)
    assert parsed.new_text == "Still broken."
    assert parsed.unsigned == ""  # a reply's whole text without its signature is made only if it opens a ticket
    whole = strip_signature(parsed.text)
    assert "Pat\nACME" not in whole and "> Try again." in whole
    assert "Pat\nACME" in parsed.text  # the mail as it came stays whole


def test_only_the_tail_is_read_but_a_long_text_still_loses_its_signature() -> None:
    paste = "\n".join(f"2026-03-02 10:00:{i % 60:02d} ERROR worker {i}: connection reset" for i in range(800))
    text = f"The log is below.\n\n{paste}\n\nThanks,\nPat\n\nSent from my iPhone\n"
    kept = strip_signature(text)
    assert kept.startswith("The log is below.") and paste in kept and "Sent from my iPhone" not in kept
