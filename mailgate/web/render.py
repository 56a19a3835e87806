"""The web pages' HTML: Jinja2 templates in ``pages/`` with autoescape on, and the headers every page has.

Nothing on the pages runs script, and the Content-Security-Policy says so: even text that escaped
escaping could not run. Pages show a customer's thread, so they are never cached and never name
their address (the status link is a key) to another site: ``no-store`` and ``no-referrer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

_ENV = Environment(
    loader=FileSystemLoader(str(Path(__file__).resolve().parent / "pages")),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

ERRORS = {
    400: ("The form could not be read", "Please go back and send it again."),
    404: ("Page not found", "This page does not exist, or its link is no longer valid. The link in our "
                            "latest mail about your request always works; you can also reply to that mail."),
    413: ("Too large", "What you sent is larger than this page accepts. Please send fewer or smaller files, "
                       "or reply to our mail with them attached."),
    429: ("Too many requests", "Please wait a few minutes before sending again."),
    503: ("Please try again shortly", "We cannot take your message right now. Nothing was stored; please "
                                      "send it again in a minute."),
}


def human_size(size: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def page(template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    html = _ENV.get_template(template).render(context)
    return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})


def error(status: int, title: str = "", text: str = "", headers: dict[str, str] | None = None) -> HTMLResponse:
    default_title, default_text = ERRORS.get(status, ("Something went wrong", "Please try again."))
    return page("error.html", status, headers, title=title or default_title, text=text or default_text)
