"""Signed Message-IDs and loop header: what we sign verifies, nothing else does."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from mailgate.identity import Identity, SignedId, is_own_address, load_secret

SECRET = b"unit-test-secret-0123456789abcdef"


@pytest.fixture
def identity() -> Identity:
    return Identity(SECRET, "Example.COM")


def test_message_id_round_trip(identity: Identity) -> None:
    mid = identity.message_id(4711, "Pat <Pat@Customer.example>")
    assert mid.startswith("<mg.4711.") and mid.endswith("@example.com>")
    assert identity.verify_message_id(mid) == SignedId(4711, identity.recipient_hash("pat@customer.example"))
    assert identity.verify_message_id(mid.strip("<>")) == SignedId(
        4711, identity.recipient_hash("pat@customer.example")
    )


def test_message_ids_are_unique_per_call(identity: Identity) -> None:
    ids = {identity.message_id(1, "pat@customer.example") for _ in range(50)}
    assert len(ids) == 50


def _replace_part(mid: str, index: int, new: str) -> str:
    local, at, domain = mid.strip("<>").partition("@")
    parts = local.split(".")
    parts[index] = new
    return f"<{'.'.join(parts)}{at}{domain}>"


def test_tampering_is_rejected(identity: Identity) -> None:
    mid = identity.message_id(4711, "pat@customer.example")
    sig = mid.strip("<>").split("@")[0].split(".")[4]
    flipped = ("b" if sig[0] == "a" else "a") + sig[1:]
    for forged in (
        _replace_part(mid, 1, "4712"),  # another ticket
        _replace_part(mid, 2, "a" * 8),  # another nonce
        _replace_part(mid, 3, "a" * 6),  # another recipient
        _replace_part(mid, 4, flipped),  # another signature
    ):
        assert forged != mid
        assert identity.verify_message_id(forged) is None


def test_other_domain_or_other_secret_is_rejected(identity: Identity) -> None:
    mid = identity.message_id(4711, "pat@customer.example")
    assert identity.verify_message_id(mid.replace("@example.com", "@example.org")) is None
    assert Identity(SECRET, "example.org").verify_message_id(mid) is None
    assert Identity(b"another-secret-0123456789abcdef!", "example.com").verify_message_id(mid) is None


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "<>",
        "<CAF=x@mail.gmail.com>",
        "<mg.1.aaaaaaaa.bbbbbb.cccccccccccccccc@example.com>",
        "<mg." + "9" * 5000 + ".aaaaaaaa.bbbbbb.cccccccccccccccc@example.com>",  # no int() of 5000 digits
    ],
)
def test_foreign_ids_are_not_ours(identity: Identity, junk: str) -> None:
    assert identity.verify_message_id(junk) is None


def test_recipient_hash(identity: Identity) -> None:
    h = identity.recipient_hash("pat@customer.example")
    assert len(h) == 6
    assert identity.recipient_hash("Pat Customer <PAT@customer.example>") == h
    assert identity.recipient_hash("someone.else@customer.example") != h
    assert Identity(b"another-secret-0123456789abcdef!", "example.com").recipient_hash("pat@customer.example") != h


def test_loop_value(identity: Identity) -> None:
    assert identity.loop_value.startswith("example.com; ")
    assert identity.is_own_loop(identity.loop_value)
    assert identity.is_own_loop(f"  {identity.loop_value} ")
    assert not identity.is_own_loop(None)
    assert not identity.is_own_loop("")
    assert not identity.is_own_loop("example.com; aaaaaaaaaaaaaaaa")
    assert not identity.is_own_loop("exämple.com; ünïcode")  # no TypeError from compare_digest
    assert not Identity(b"another-secret-0123456789abcdef!", "example.com").is_own_loop(identity.loop_value)


def test_is_own_address() -> None:
    own = frozenset({"support@example.com"})
    assert is_own_address("support@example.com", own)
    assert is_own_address("Support@Example.com", own)
    assert is_own_address("support+outage@example.com", own)
    assert not is_own_address("support@example.org", own)
    assert not is_own_address("helpdesk@example.com", own)
    assert not is_own_address("no-at-sign", own)


def test_load_secret_creates_a_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret"
    first = load_secret(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(path) == first


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="too short"):
        load_secret(path)


def test_processes_starting_together_share_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret"
    barrier = threading.Barrier(12)
    results: list[bytes | BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            results.append(load_secret(path))
        except BaseException as exc:  # collected: a failure must show as a failed assertion
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12
    assert all(isinstance(r, bytes) for r in results), results
    assert len(set(results)) == 1
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary files left behind


def test_plus_address_tokens_round_trip_and_refuse_forgery() -> None:
    ident = Identity(b"k" * 32, "example.com")
    address = ident.plus_address("Support <support@example.com>", "t", 4711)
    assert address.startswith("support+t4711-") and address.endswith("@example.com")
    assert ident.read_token(address, "t") == 4711
    assert ident.read_token(address.upper(), "t") == 4711  # mail systems may change case
    assert ident.read_token(address, "b") is None  # a reply token is not a bounce token
    forged = address.replace("t4711", "t4712")
    assert ident.read_token(forged, "t") is None
    assert ident.read_token("support@example.com", "t") is None
    assert Identity(b"x" * 32, "example.com").read_token(address, "t") is None  # another installation's key


def test_short_base32_is_the_prefix_of_the_whole_digest() -> None:
    """Tokens already handed out (Message-IDs, Reply-To addresses) must keep verifying."""
    import base64
    import os

    from mailgate.identity import _b32

    for _ in range(200):
        digest = os.urandom(32)
        for length in (6, 8, 10, 16):
            assert _b32(digest, length) == base64.b32encode(digest).decode().lower().rstrip("=")[:length]
