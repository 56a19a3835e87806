"""Each notification kind can be switched off globally, per department and per help topic."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope
from mailgate.errors import ConfigError
from mailgate.pipeline.ingest import Context, ingest
from tests.conftest import MakeConfig

AGENTS = {"agents": [{"name": "Jane", "email": "jane@example.com"}],
          "departments": [{"name": "Support", "members": ["jane@example.com"]},
                          {"name": "Quiet", "members": ["jane@example.com"], "notifications": {"alert_new": False}}]}
RULES = {"help_topics": [{"name": "General", "department": "Support"},
                         {"name": "Silent", "department": "Support", "recognise": {"plus": "silent"},
                          "notifications": {"ack_new": False}},
                         {"name": "Hush", "department": "Quiet", "recognise": {"plus": "hush"}}],
         "default_help_topic": "General"}


@pytest.fixture
def switched(make_config: MakeConfig) -> Iterator[Context]:
    ctx = build_context(load_config(make_config(agents=AGENTS, rules=RULES, sla={})))
    ctx.db.upgrade()
    yield ctx
    ctx.db.dispose()


def _kinds(ctx: Context, to: str) -> list[str]:
    raw = f"From: pat@customer.example\r\nTo: {to}\r\nSubject: Hi {to}\r\n\r\nx\r\n".encode()
    outcome = ingest(raw, Envelope("pat@customer.example", (to,), "pipe", datetime.now(UTC)), ctx)
    return sorted(kind for kind, _ in outcome.notifications)


def test_switches_by_topic_and_department(switched: Context) -> None:
    assert _kinds(switched, "support@example.com") == ["ack_new", "alert_new"]
    assert _kinds(switched, "support+silent@example.com") == ["alert_new"]  # the topic turns the ack off
    assert _kinds(switched, "support+hush@example.com") == ["ack_new"]  # the department turns alerts off


def test_unknown_kind_is_a_config_error(make_config: MakeConfig) -> None:
    rules: dict[str, Any] = {**RULES, "help_topics": [{"name": "General", "notifications": {"ack_neu": False}}]}
    with pytest.raises(ConfigError, match="unknown notification kind"):
        load_config(make_config(agents=AGENTS, rules=rules, sla={}))
