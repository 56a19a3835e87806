"""Which schema this mailgate needs, read from the migrations shipped with it (no Alembic import)."""

from __future__ import annotations

from pathlib import Path

from mailgate.errors import ConfigError


def migrations_dir() -> Path:
    """Top-level ``migrations/`` in a checkout, or the copy the wheel ships."""
    package = Path(__file__).resolve().parent.parent  # mailgate/
    for candidate in (package.parent / "migrations", package / "_data" / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("mailgate migrations not found (broken install?)")


def newest_revision() -> str:
    """The schema this mailgate needs: the newest migration's revision (files are named 0007_what.py)."""
    return max(p.name.split("_", 1)[0] for p in (migrations_dir() / "versions").glob("[0-9]*.py"))


def refuse_newer(version: str | None, where: str) -> None:
    """A database a newer mailgate already migrated (a rolling upgrade, this daemon not yet upgraded):
    nothing here can go back, so say which side to upgrade rather than fail inside Alembic."""
    needed = newest_revision()
    if version is not None and version > needed:
        raise ConfigError(
            f"the database ({where}) is at schema {version}, newer than this mailgate's {needed}: a newer "
            "mailgate has migrated it; upgrade this installation to that version"
        )


def require(version: str | None, where: str) -> None:
    """A read-only view on a database that is not at this mailgate's schema: say what to run, never migrate."""
    needed = newest_revision()
    refuse_newer(version, where)
    if version != needed:
        have = f"at schema {version}" if version else "without mailgate's tables"
        raise ConfigError(
            f"the database ({where}) is {have}, this mailgate needs {needed}: "
            "run `mailgate db upgrade` (serve does it at start)"
        )


def require_sqlite_file(path: str) -> None:
    """A read-only view never creates the database it was asked to read."""
    if path and path != ":memory:" and not Path(path).is_file():
        raise ConfigError(f"no database at {path} yet: start `mailgate serve` or run `mailgate db upgrade`")
