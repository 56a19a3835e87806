"""An attachment file missing from this daemon's state_dir is re-derived from the raw mail in the database.

Several daemons each keep their own state_dir: the one that relays an agent's attachment is often not
the one that received it. A file lost in a crash is the same case.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context, ingest
from tests.conftest import MakeConfig

PDF = b"%PDF-1.4 pretend invoice " + bytes(range(256)) * 8


def _with_attachment(mid: str) -> bytes:
    encoded = base64.encodebytes(PDF).decode().replace("\n", "\r\n")
    return (
        "From: pat@customer.example\r\nTo: support@example.com\r\nSubject: Invoice\r\n"
        f"Message-ID: <{mid}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nSee the attached invoice.\r\n"
        "--b\r\nContent-Type: application/pdf; name=invoice.pdf\r\nContent-Disposition: attachment; "
        f"filename=invoice.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}--b--\r\n"
    ).encode()


def test_a_file_another_daemon_received_is_rebuilt_from_the_raw_mail(
    ctx: Context, make_config: MakeConfig, tmp_path: Path
) -> None:
    env = Envelope("pat@customer.example", ("support@example.com",), "smtp", ctx.clock.now())
    assert ingest(_with_attachment("inv@customer.example"), env, ctx).status == "accepted"
    sha = hashlib.sha256(PDF).hexdigest()
    assert ctx.blobs.path(sha).read_bytes() == PDF  # the receiving daemon has it

    other_state = tmp_path / "other-daemon"
    other = build_context(load_config(make_config(state_dir=str(other_state))), db=ctx.db)
    assert not other.blobs.path(sha).exists()
    assert other.blobs.get(sha) == PDF  # re-derived from the mail in the shared database ...
    assert other.blobs.path(sha).read_bytes() == PDF  # ... and kept, so the next send reads the file

    ctx.blobs.path(sha).unlink()  # lost in a crash on the receiving daemon: the same way back
    assert ctx.blobs.get(sha) == PDF


def test_a_hash_no_stored_mail_carries_is_still_an_error(ctx: Context) -> None:
    with pytest.raises(FileNotFoundError):
        ctx.blobs.get("0" * 64)
