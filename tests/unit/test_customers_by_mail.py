"""Customers by mail: where a close word counts (pure), and the settings an admin can get wrong, each
reported as ``file:line: message`` by load_config and by ``mailgate check-config``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config import load_config
from mailgate.pipeline.customer_close import command_in
from mailgate.pipeline.quotes import split_new_text
from mailgate.pipeline.status_request import addressed
from tests.conftest import run_cli
from tests.unit.test_config import MAIN, problems, write

WORDS = ("#close", "#erledigt")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("#close", "#close"),
        ("Thanks, all good!\n#close\n", "#close"),
        ("  #Close  \nthanks", "#close"),
        ("#ERLEDIGT", "#erledigt"),
        ("Please #close this", None),  # not a line of its own: the customer's words
        ("#closed", None),
        ("close", None),
        ("Still broken.\n\nOn Mon, 2 Mar 2026, Support <support@example.com> wrote:\n> #close", None),
        ("> #close\nno, it is not solved", None),  # an inline answer below the quoted command
        ("Still broken.\n\n-----Original Message-----\nFrom: Support\nSent: Monday\n\n#close", None),
    ],
)
def test_a_close_word_counts_only_on_its_own_line_of_the_new_text(text: str, found: str | None) -> None:
    assert command_in(split_new_text(text), WORDS) == found


def test_the_status_address_and_its_plus_forms() -> None:
    assert addressed(("Status@Example.com",), "status@example.com")
    assert addressed(("support@example.com", "status+x@example.com"), "status@example.com")
    assert not addressed(("support@example.com", "status@example.org"), "status@example.com")
    # also sent to a support address: a request like any other, which must become a ticket
    assert not addressed(("support+x@example.com", "status@example.com"), "status@example.com", ["support@example.com"])


def _config(tmp_path: Path, extra: str) -> Path:
    return write(tmp_path, main=MAIN.replace("  addresses: [support@example.com]\n",
                                             "  addresses: [support@example.com]\n" + extra))


def _line(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_good_settings_load(tmp_path: Path) -> None:
    path = _config(tmp_path, "  status_address: Status@Example.com\n  status_answers: {count: 5, within: 2h}\n")
    path.write_text(path.read_text() + "tickets:\n  customer_close: {enabled: true, words: ['#Close', '#erledigt']}\n")
    config = load_config(path)
    assert config.main.intake.status_address == "status@example.com"
    assert config.main.intake.status_answers.count == 5
    assert config.main.tickets.customer_close.words == ["#close", "#erledigt"]


def test_a_status_address_that_is_a_support_address_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, "  status_address: support@example.com\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{_line(path, 'status_address')}: ")
    assert "also a support or notes address" in problem


def test_bad_close_words_and_limits_name_their_lines(tmp_path: Path) -> None:
    path = _config(tmp_path, "  status_answers: {count: 0}\n")
    path.write_text(path.read_text() + "tickets:\n  customer_close:\n    enabled: true\n    words: [close]\n")
    found = problems(path)
    assert any(p.startswith(f"{path}:{_line(path, 'words:')}: ") and "starts with '#'" in p for p in found), found
    assert any(p.startswith(f"{path}:{_line(path, 'count: 0')}: ") for p in found), found
    result = run_cli(path, "check-config")
    assert result.code == 1
    assert f"{path}:{_line(path, 'words:')}: " in result.stderr and "Traceback" not in result.stderr
