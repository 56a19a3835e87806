"""Read-only views keep working while an admin is fixing a broken rules file (serve keeps its old rules too)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import make_mail, run_cli


def test_tickets_and_report_work_with_a_broken_rules_file(config_path: Path) -> None:
    assert run_cli(config_path, "ingest", stdin=make_mail(message_id="<ro@customer.example>")).code == 0
    rules = config_path.parent / "rules.yaml"
    rules.write_text(
        rules.read_text() + "\n  - name: broken\n    when: {all: [{field: subject, op: containz, value: x}]}\n"
    )
    assert run_cli(config_path, "check-config").code == 1
    listing = run_cli(config_path, "tickets", "list", "--json")
    assert listing.code == 0 and "rules.yaml" in listing.stderr  # the problem is shown, the view still works
    [ticket] = json.loads(listing.stdout)
    assert run_cli(config_path, "tickets", "show", ticket["number"]).code == 0
    assert json.loads(run_cli(config_path, "report", "--format", "json").stdout)[0]["tickets"] == 1
