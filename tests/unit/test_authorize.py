"""Agent authentication: a trusted server's Authentication-Results, aligned with the agent's domain."""

from __future__ import annotations

from mailgate.config import AgentAuthentication
from mailgate.pipeline.authorize import authenticated_by_mx
from mailgate.pipeline.parse import parse

POLICY = AgentAuthentication(authserv_ids=["mx.example.com"])


def _mail(*results: str) -> bytes:
    headers = "".join(f"Authentication-Results: {r}\r\n" for r in results)
    return (
        f"{headers}From: jane@example.com\r\nTo: support@example.com\r\nSubject: x\r\n\r\n#status closed\r\n".encode()
    )


def test_dkim_or_spf_pass_from_our_mx_authenticates() -> None:
    dkim = _mail("mx.example.com; dkim=pass header.d=example.com header.s=sel; spf=fail smtp.mailfrom=x@evil.example")
    assert authenticated_by_mx(parse(dkim), "jane@example.com", POLICY) == "dkim=pass (mx.example.com)"
    spf = _mail("mx.example.com; dkim=none; spf=pass smtp.mailfrom=jane@example.com")
    assert authenticated_by_mx(parse(spf), "jane@example.com", POLICY) == "spf=pass (mx.example.com)"


def test_untrusted_server_misaligned_domain_or_failure_do_not() -> None:
    cases = [
        _mail("mx.evil.example; dkim=pass header.d=example.com"),  # a header the sender wrote
        _mail("mx.example.com; dkim=pass header.d=evil.example"),  # signed, but by someone else
        _mail("mx.example.com; dkim=fail header.d=example.com; spf=softfail smtp.mailfrom=jane@example.com"),
        _mail(),
    ]
    for raw in cases:
        assert authenticated_by_mx(parse(raw), "jane@example.com", POLICY) is None


def test_only_the_topmost_header_of_our_server_counts() -> None:
    # our MX prepends its verdict; a forged "pass" further down (written by the sender) is ignored
    raw = _mail("mx.example.com; dkim=fail header.d=example.com", "mx.example.com; dkim=pass header.d=example.com")
    assert authenticated_by_mx(parse(raw), "jane@example.com", POLICY) is None


def test_no_trusted_servers_configured_means_no_header_is_trusted() -> None:
    raw = _mail("mx.example.com; dkim=pass header.d=example.com")
    assert authenticated_by_mx(parse(raw), "jane@example.com", AgentAuthentication()) is None
