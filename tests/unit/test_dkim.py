"""Outgoing mail signed with DKIM verifies against the published key; a bad key is a config error."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import dkim
import pytest

from mailgate.config import Dkim
from mailgate.errors import ConfigError
from mailgate.outbound.dkim import DkimSigner

MAIL = (b"From: Example Support <support@example.com>\r\nTo: pat@customer.example\r\nSubject: [#123456] Hello\r\n"
        b"Date: Tue, 24 Nov 2026 08:00:00 +0000\r\nMessage-ID: <x@example.com>\r\n\r\nHello Pat.\r\n")


def _keys(tmp_path: Path) -> tuple[Path, bytes]:
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def test_signed_mail_verifies_and_tampering_is_detected(tmp_path: Path) -> None:
    key, record = _keys(tmp_path)
    signed = DkimSigner(Dkim(selector="mg", domain="example.com", private_key_file=key)).sign(MAIL)
    assert signed.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mg._domainkey.example.com."
        return record

    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"Hello Pat.", b"Hello Eve."), dnsfunc=dns)


def test_unreadable_or_invalid_key_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the DKIM key"):
        DkimSigner(Dkim(selector="mg", domain="example.com", private_key_file=tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="DKIM signing failed"):
        DkimSigner(Dkim(selector="mg", domain="example.com", private_key_file=bad))
