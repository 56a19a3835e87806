"""CPython's own email test corpus through the real ``mailgate ingest``: odd, broken and historic
mail from twenty years of bug reports. Every message must be stored (accepted, duplicate or
quarantined with a reason); none may crash the CLI or vanish."""

from __future__ import annotations

import email
import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from mailgate.config import load_config
from mailgate.storage.model import Inbound
from tests.conftest import run_cli

DATA = Path(email.__file__).resolve().parent.parent / "test" / "test_email" / "data"
MESSAGES = sorted(DATA.glob("msg_*.txt")) if DATA.is_dir() else []
STORED = {"accepted", "duplicate", "quarantined"}


@pytest.mark.skipif(
    not MESSAGES,
    reason=f"this Python has no email test corpus at {DATA} (distributions often leave out the test package)",
)
def test_every_cpython_test_message_is_stored_without_a_crash(config_path: Path) -> None:
    outcomes: list[tuple[str, str]] = []
    for chunk in (MESSAGES[i : i + 25] for i in range(0, len(MESSAGES), 25)):
        result = run_cli(config_path, "ingest", *map(str, chunk))
        assert result.code in (0, 65), result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        for line in result.stderr.splitlines():
            m = re.match(r"^(\S+/msg_\w+\.txt)(?:#\d+)?: (\w+)", line)
            if m:
                outcomes.append((m.group(1), m.group(2)))
    assert sorted(f for f, _ in outcomes) == sorted(map(str, MESSAGES)), "each file: exactly one outcome"
    assert {s for _, s in outcomes} <= STORED, [(f, s) for f, s in outcomes if s not in STORED]

    engine = create_engine(load_config(config_path).database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Inbound.status, Inbound.reason)).all()
    finally:
        engine.dispose()
    assert len(rows) == len(MESSAGES)  # one row per message: nothing lost, nothing stored twice
    assert {status for status, _ in rows} <= STORED
    internal = [reason for status, reason in rows if reason and reason.startswith("internal error")]
    assert internal == []  # quarantine is for mail we cannot read, not for bugs of ours
