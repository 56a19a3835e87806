"""Where things are, from mailgate.yaml's point of view: paths relative to its folder, and its database.

``database_url`` reads only that one key, without validating the file, so that ``tickets list`` need not
load the configuration models to find its database (they take a fifth of a second to import);
``config/load.py`` resolves paths with the same two functions, so both always agree.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def resolve(base: Path, value: Path | None) -> Path | None:
    if value is None:
        return None
    value = Path(os.path.expandvars(str(value))).expanduser()
    return value if value.is_absolute() else (base / value).resolve()


def sqlite_url(base: Path, url: str) -> str:
    """Make ``sqlite:///relative.db`` relative to the config folder, not the cwd."""
    scheme, sep, path = url.partition(":///")
    if scheme.startswith("sqlite") and sep and path and not path.startswith("/") and ":memory:" not in path:
        return f"{scheme}:///{(base / path).resolve()}"
    return url


def _plain(path: Path) -> dict[str, object] | None:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _state_dir(base: Path, data: dict[str, object]) -> Path | None:
    state = data.get("state_dir", "../var")
    return resolve(base, Path(state)) if isinstance(state, str) else None


def state_dir(path: Path | str) -> Path | None:
    """The state_dir mailgate.yaml names (default ../var beside it), or None when the file is not plain."""
    path = Path(path).resolve()
    data = _plain(path)
    return None if data is None else _state_dir(path.parent, data)


def database_url(path: Path | str) -> str | None:
    """The database URL mailgate.yaml names (or its default under state_dir); None when the file is not
    plain enough to say it without the full loader, which then reports what is wrong."""
    path = Path(path).resolve()
    data = _plain(path)
    if data is None:
        return None
    base = path.parent
    database = data.get("database")
    if database is None:
        state = _state_dir(base, data)
        return None if state is None else f"sqlite:///{state / 'mailgate.db'}"
    if isinstance(database, dict) and isinstance(database.get("url"), str):
        return sqlite_url(base, database["url"])
    return None
