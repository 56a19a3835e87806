"""Which schema this mailgate needs, read from the migrations shipped with it (no Alembic import)."""

from __future__ import annotations

from pathlib import Path


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
