"""Templates: strict undefined variables reported as file:line, HTML autoescaping of customer text,
and a sandbox that keeps admin-edited templates away from Python internals."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from mailgate.outbound.templates import SAMPLE_CONTEXT, Templates

REPO = Path(__file__).resolve().parent.parent.parent
SHIPPED = REPO / "templates"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the shipped templates an admin is about to edit."""
    target = tmp_path / "templates"
    shutil.copytree(SHIPPED, target)
    return target


def context(**message: str) -> dict[str, Any]:
    ctx = copy.deepcopy(SAMPLE_CONTEXT)
    ctx["message"].update(message)
    ctx["ticket"].update({k: v for k, v in message.items() if k == "subject"})
    return ctx


def test_shipped_templates_check_clean() -> None:
    assert Templates(SHIPPED).check() == []


def test_shipped_acknowledgment_renders_all_three_parts() -> None:
    rendered = Templates(SHIPPED).render("ack_new", context())
    assert "[#123456]" in rendered.subject and "\n" not in rendered.subject
    assert "-- Reply above this line --" in rendered.text
    assert rendered.html is not None and "<strong>[#123456]</strong>" in rendered.html


def test_html_autoescapes_customer_text_and_text_part_does_not(folder: Path) -> None:
    evil = "<script>alert('x')</script> & <b>bold</b>"
    rendered = Templates(folder).render("ack_new", context(subject=evil))
    assert rendered.html is not None
    assert "<script>" not in rendered.html and "<b>bold</b>" not in rendered.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in rendered.html
    assert evil in rendered.text  # plain text is not HTML: escaping it would garble the customer's words


def test_unknown_variable_fails_the_render(folder: Path) -> None:
    path = folder / "ack_new.txt.j2"
    path.write_text("Hello\n{{ requester.name }}\n{{ ticket.nmber }}\n")
    with pytest.raises(UndefinedError, match="nmber"):
        Templates(folder).render("ack_new", context())


def test_unknown_variable_is_reported_with_file_and_line(folder: Path) -> None:
    path = folder / "ack_new.txt.j2"
    path.write_text("Hello\n{{ requester.name }}\n{{ ticket.nmber }}\n")
    [problem] = Templates(folder).check()
    assert problem.startswith(f"{path}:3: ")
    assert "nmber" in problem


def test_syntax_error_is_reported_with_file_and_line(folder: Path) -> None:
    path = folder / "ack_new.html.j2"
    path.write_text("<p>fine</p>\n<p>{% if ticket.number %}never closed</p>\n")
    [problem] = Templates(folder).check()
    assert problem.startswith(f"{path}:2: ")


def test_missing_template_is_reported(folder: Path) -> None:
    (folder / "ack_new.subject.j2").unlink()
    assert Templates(folder).check() == [f"{folder / 'ack_new.subject.j2'}:1: template missing"]


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "''.__class__.__mro__[1].__subclasses__()",
        "ticket.__class__.__init__.__globals__",
        "range.__globals__",
    ],
)
def test_sandbox_refuses_python_internals(folder: Path, expression: str) -> None:
    (folder / "ack_new.subject.j2").write_text("{{ " + expression + " }}\n")
    with pytest.raises(SecurityError):
        Templates(folder).render("ack_new", context())
    [problem] = Templates(folder).check()
    assert "unsafe" in problem
