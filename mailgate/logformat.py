"""One line per event, as logfmt (default), JSON or plain text; the same in every process of serve.

An event is an ordinary ``logging`` call whose ``extra`` carries ``{"fields": {...}}``; any module logs
one without importing this file. Fields are written in the order given, after ``msg`` (empty ones left
out, except in JSON), so an admin can ``grep 'msg="mail received"' | grep outcome=quarantined`` or feed
the JSON to a log shipper.

Under systemd (``JOURNAL_STREAM`` set) the journal stamps every line itself, so ours is left out.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, Literal

Format = Literal["logfmt", "json", "text"]
FIELDS = "fields"  # the key in ``extra`` that holds an event's fields
# Third-party loggers that speak per protocol step or per job run; ours already say what matters.
# APScheduler's "maximum number of running instances reached" is a flush outlasting its interval during
# a burst (the running one drains the outbox): expected, not something for an admin.
QUIET = {
    "mail.log": logging.WARNING,
    "apscheduler": logging.WARNING,
    "alembic": logging.WARNING,
    "apscheduler.scheduler": logging.ERROR,
}


def _logfmt_value(value: object) -> str:
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if text and not any(c in text for c in ' ="\\') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _json_value(value: object) -> object:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_value(v) for v in value]
    return str(value)


class EventFormatter(logging.Formatter):
    def __init__(self, style: Format = "logfmt", *, timestamps: bool = True) -> None:
        super().__init__()
        self.style = style
        self.timestamps = timestamps

    def _time(self, record: logging.LogRecord) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def format(self, record: logging.LogRecord) -> str:
        values: Mapping[str, object] = getattr(record, FIELDS, None) or {}
        message = record.getMessage()
        error = self.formatException(record.exc_info) if record.exc_info else None
        if self.style == "json":
            data: dict[str, object] = {}
            if self.timestamps:
                data["ts"] = self._time(record)
            data.update(level=record.levelname.lower(), logger=record.name, msg=message)
            data.update((k, _json_value(v)) for k, v in values.items())
            if error:
                data["error"] = error
            return json.dumps(data, ensure_ascii=False)
        if self.style == "text":
            head = f"{self._time(record)} " if self.timestamps else ""
            tail = "".join(f" {k}={_logfmt_value(v)}" for k, v in values.items() if v is not None and v != "")
            line = f"{head}{record.levelname} {record.name}: {message}{tail}"
        else:
            parts = [f"ts={self._time(record)}"] if self.timestamps else []
            parts += [f"level={record.levelname.lower()}", f"msg={_logfmt_value(message)}"]
            parts += [f"{k}={_logfmt_value(v)}" for k, v in values.items() if v is not None and v != ""]
            if record.levelno >= logging.WARNING:
                parts.append(f"logger={record.name}")
            line = " ".join(parts)
        return f"{line}\n{error}" if error else line


def configure(style: Format = "logfmt", level: str | int = "info", stream: IO[str] | None = None) -> None:
    """Replace the root logger's handlers with one writing ``style`` to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(EventFormatter(style, timestamps=not os.environ.get("JOURNAL_STREAM")))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet)


def settings() -> tuple[Format, int]:
    """What ``configure`` was last given, for a child process to repeat (spawned children start bare)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler.formatter, EventFormatter):
            return handler.formatter.style, root.level
    return "logfmt", root.level


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, /, **values: Any) -> None:
    """Cheap when the level is off: the fields are not even collected into a record."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={FIELDS: values})
