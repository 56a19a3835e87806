"""Address headers read as mail clients read them: the address in angle brackets wins, folding and
quoting never let a display name smuggle in another address, and groups give their members."""

from __future__ import annotations

import pytest

from mailgate.addresslist import addresses
from mailgate.pipeline.parse import parse


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice@example.com <bob@example.com>", [("alice@example.com", "bob@example.com")]),
        ('"Pat\r\n Bcc: victim@elsewhere.example" <pat@customer.example>',
         [("Pat Bcc: victim@elsewhere.example", "pat@customer.example")]),
        ('"<img src=x onerror=alert(2)>" <ann@customer.example>',
         [("<img src=x onerror=alert(2)>", "ann@customer.example")]),
        ("Pat <pat@x.example>, bob@y.example", [("Pat", "pat@x.example"), ("", "bob@y.example")]),
        ('"Smith, John" <john@x.example>', [("Smith, John", "john@x.example")]),
        ("pat@x.example (Pat Smith)", [("Pat Smith", "pat@x.example")]),
        ("Pat (work) <pat@x.example>", [("Pat", "pat@x.example")]),
        ("Team: a@x.example, b@y.example;, c@z.example",
         [("", "a@x.example"), ("", "b@y.example"), ("", "c@z.example")]),
        ("undisclosed-recipients:;", []),
        ("a@b.example, ,d@e.example", [("", "a@b.example"), ("", "d@e.example")]),
    ],
)
def test_addresses(value: str, expected: list[tuple[str, str]]) -> None:
    assert addresses([value]) == expected


def test_the_requester_is_the_address_clients_answer() -> None:
    raw = (b'From: "Pat\r\n Bcc: victim@elsewhere.example" <pat@customer.example>\r\nTo: support@example.com\r\n'
           b"Subject: x\r\n\r\nhi\r\n")
    assert parse(raw).from_addr is not None and parse(raw).from_addr.email == "pat@customer.example"  # type: ignore[union-attr]
    raw = b"From: alice@example.com <bob@example.com>\r\nTo: support@example.com\r\nSubject: x\r\n\r\nhi\r\n"
    assert parse(raw).from_addr.email == "bob@example.com"  # type: ignore[union-attr]
