"""Errors as RFC 9457 problem details (``application/problem+json``), the one shape every API error has.

``type`` is a stable URI per kind of problem (relative, under ``/api/problems/``), ``title`` its
short name, ``detail`` what went wrong with this request, and ``errors`` the fields at fault.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

MEDIA_TYPE = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class Problem(Exception):
    """Raised by a handler; answered by the app's exception handler."""

    def __init__(self, status: int, kind: str, detail: str, *, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail
        self.errors = errors
        self.headers = headers or {}


def body(status: int, kind: str, detail: str, instance: str | None = None,
         errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": f"/api/problems/{kind}", "title": TITLES.get(status, "Error"),
                            "status": status, "detail": detail}
    if instance:
        data["instance"] = instance
    if errors:
        data["errors"] = errors
    return data


def response(status: int, kind: str, detail: str, *, instance: str | None = None,
             errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(status, kind, detail, instance, errors), status_code=status, headers=headers,
                        media_type=MEDIA_TYPE)


def schema() -> dict[str, Any]:
    """The problem object in OpenAPI, for every error response the API documents."""
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
    }
