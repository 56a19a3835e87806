"""Thread-Index values that Outlook can place in a conversation."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from mailgate.outbound import threadindex

GUID = bytes(range(16))


def test_decodes_a_real_outlook_value() -> None:
    # A value written by Outlook: header timestamp 2018-07-16 07:40 UTC, one child block.
    data = threadindex.decode("AdQc2DN7rLoS3hgnE/O76rpFzxN/EwAddF4A")
    assert data is not None and len(data) == 27
    header_time = int.from_bytes(data[:6] + b"\0\0", "big")
    assert abs(header_time - threadindex.filetime(datetime(2018, 7, 16, 7, 40, tzinfo=UTC))) < 10**7


def test_root_carries_time_and_guid() -> None:
    when = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    data = threadindex.root(when, GUID)
    assert len(data) == 22 and data[6:] == GUID
    assert data[:6] == threadindex.filetime(when).to_bytes(8, "big")[:6]


def test_child_extends_parent_and_encodes_the_delay() -> None:
    start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    parent = threadindex.root(start, GUID)
    reply = threadindex.child(parent, start + timedelta(hours=2), random_bits=0)
    assert reply[:22] == parent and len(reply) == 27
    block = int.from_bytes(reply[22:], "big")
    assert block >> 39 == 0  # short delay: delta code 0
    delta = ((block >> 8) & 0x7FFFFFFF) << 18
    assert abs(delta - 2 * 3600 * 10**7) < 1 << 18  # two hours, to the block's resolution


def test_long_delay_uses_the_coarse_code() -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    reply = threadindex.child(threadindex.root(start, GUID), start + timedelta(days=800), random_bits=0)
    assert int.from_bytes(reply[22:], "big") >> 39 == 1


def test_malformed_values_are_ignored() -> None:
    assert threadindex.decode(None) is None
    assert threadindex.decode("not base64 !!") is None
    assert threadindex.decode(base64.b64encode(b"short").decode()) is None
    assert threadindex.decode(base64.b64encode(bytes(23)).decode()) is None  # not 22 + 5k bytes


def test_encode_round_trip() -> None:
    data = threadindex.child(threadindex.root(datetime.now(UTC), GUID), datetime.now(UTC))
    assert threadindex.decode(threadindex.encode(data)) == data
