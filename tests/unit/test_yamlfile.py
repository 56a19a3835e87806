"""yamlfile: safe YAML with a path -> line map, so every config problem can name file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.errors import ConfigError
from mailgate.yamlfile import load_yaml


def test_load_yaml_maps_paths_to_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a:\n  b:\n    - first\n    - {c: 1}\n")
    doc = load_yaml(path)
    assert doc.data == {"a": {"b": ["first", {"c": 1}]}}
    assert doc.line(("a", "b", 1, "c")) == 4
    assert doc.line(("a", "b", 0)) == 3
    assert doc.line(("a", "b", 1, "not-there")) == 4  # deepest known prefix
    assert doc.where(("a",)) == f"{path}:1"


def test_empty_yaml_file_is_an_empty_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    assert load_yaml(path).data == {}


def test_yaml_tags_that_would_run_code_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match=rf"^{path}:1: YAML"):
        load_yaml(path)


def test_duplicate_keys_are_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert info.value.problems == [f"{path}:4: duplicate key 'c'", f"{path}:5: duplicate key 'a'"]


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: YAML syntax error: "):
        load_yaml(path)


def test_several_documents_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("a: 1\n---\nb: 2\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: YAML syntax error: "):
        load_yaml(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'nope.yaml'}:1: file not found$"):
        load_yaml(tmp_path / "nope.yaml")
