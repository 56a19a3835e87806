"""The quick database lookup of read-only commands agrees with the full configuration loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mailgate.config import load_database_url
from mailgate.paths import database_url

BASE = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "mailgate.yaml").read_text())


@pytest.mark.parametrize("change", [
    {},  # the demo: a relative sqlite URL
    {"database": None},  # no database: the default under state_dir
    {"database": None, "state_dir": "state-here"},
    {"database": None, "state_dir": "$MAILGATE_TEST_STATE/var"},
    {"database": {"url": "sqlite:///db/elsewhere.db"}},
    {"database": {"url": "sqlite:////abs/mailgate.db"}},
    {"database": {"url": "postgresql+psycopg://mg:secret@db.example:5432/mailgate?options=-csearch_path%3Dx"}},
])
def test_quick_and_full_lookups_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict) -> None:
    monkeypatch.setenv("MAILGATE_TEST_STATE", str(tmp_path / "env-state"))
    main = {**BASE, **change}
    if main.get("database") is None:
        main.pop("database", None)
    folder = tmp_path / "etc"
    folder.mkdir()
    for name in ("rules.yaml", "agents.yaml", "sla.yaml"):
        (folder / name).write_text((Path(__file__).resolve().parents[2] / "config" / name).read_text())
    path = folder / "mailgate.yaml"
    path.write_text(yaml.safe_dump(main))
    assert database_url(path) == load_database_url(path)


def test_a_file_the_quick_lookup_cannot_read_leaves_it_to_the_full_loader(tmp_path: Path) -> None:
    path = tmp_path / "mailgate.yaml"
    path.write_text("database: [not, a, mapping]\n")
    assert database_url(path) is None
    path.write_text("intake: {addresses: [\n")  # broken YAML
    assert database_url(path) is None
