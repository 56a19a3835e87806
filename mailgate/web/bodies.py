"""A POST's body, JSON or multipart, read into the request model and the uploaded files.

Whatever arrives, the answer is a 4xx problem, never a 500: no or another content type is 415, a body
that is not JSON (or multipart that cannot be read) 400, well-formed input that the model refuses 422
with each field named, bad base64 422. JSON is parsed off the event loop (the loop also serves SMTP),
and its size is bounded before it is read (``app.BodyLimit``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from mailgate.intake.channel import Upload
from mailgate.web.api_models import CONTENT_TYPE, MAX_ATTACHMENTS, AttachmentIn
from mailgate.web.problems import Problem

Model = TypeVar("Model", bound=BaseModel)
_CONTENT_TYPE = re.compile(CONTENT_TYPE)
_FLAGS = ("ack", "note")


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


async def read(request: Request, model: type[Model], max_size: int) -> tuple[Model, tuple[Upload, ...]]:
    kind = media_type(request.headers.get("content-type"))
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        raw = await request.body()
        return await asyncio.to_thread(_from_json, raw, model)
    if kind == "multipart/form-data":
        return await _from_form(request, model, max_size)
    raise Problem(415, "unsupported-media-type",
                  f"send application/json or multipart/form-data, not {kind[:100] or 'a body without Content-Type'}")


def invalid(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> Problem:
    errors = [{"field": ".".join(str(p) for p in (*prefix, *e["loc"])) or "body", "message": e["msg"]}
              for e in exc.errors(include_url=False, include_input=False, include_context=False)]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "the request is not valid"
    return Problem(422, "invalid", detail, errors=errors)


def field_problem(field: str, message: str) -> Problem:
    return Problem(422, "invalid", f"{field}: {message}", errors=[{"field": field, "message": message}])


def _from_json(raw: bytes, model: type[Model]) -> tuple[Model, tuple[Upload, ...]]:
    try:
        given = model.model_validate_json(raw)
    except ValidationError as exc:
        unreadable = next((e for e in exc.errors(include_url=False) if e["type"] == "json_invalid"), None)
        if unreadable is not None:
            raise Problem(400, "not-json", f"the body is not JSON: {unreadable['msg']}") from None
        raise invalid(exc) from None
    attached: list[AttachmentIn] = getattr(given, "attachments", [])
    return given, tuple(_decoded(i, a) for i, a in enumerate(attached))


def _decoded(index: int, attachment: AttachmentIn) -> Upload:
    try:
        data = base64.b64decode(attachment.content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise field_problem(f"attachments.{index}.content_base64", "not base64 (RFC 4648, with padding)") from None
    return Upload(attachment.filename, content_type(attachment.content_type), data)


def content_type(given: str | None) -> str:
    """A file's type as the mail will say it. ``multipart/*`` and ``message/*`` are structure, not a
    file's type, and would make the composed mail read as something else: they become octet-stream."""
    kind = (given or "").strip().lower()
    if not _CONTENT_TYPE.match(kind) or kind.split("/", 1)[0] in ("multipart", "message"):
        return "application/octet-stream"
    return kind


async def _from_form(request: Request, model: type[Model], max_size: int) -> tuple[Model, tuple[Upload, ...]]:
    form = await request.form(max_files=MAX_ATTACHMENTS, max_fields=100, max_part_size=max_size)
    try:
        values: dict[str, Any] = {}
        uploads: list[Upload] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "attachments":
                    raise field_problem(name, "a file is allowed only as an 'attachments' part")
                uploads.append(Upload(value.filename or "attachment", content_type(value.content_type),
                                      await value.read()))
            elif name == "attachments":
                raise field_problem("attachments", "each one a file part (with a filename)")
            elif name in values:
                raise field_problem(name, "given more than once")
            else:
                values[name] = value
    finally:
        await form.close()
    if "fields" in values:
        values["fields"] = _json_object(values["fields"])
    for flag in _FLAGS:
        if flag in values and values[flag] not in ("true", "false"):
            raise field_problem(flag, "true or false")
    try:
        return model.model_validate(values), tuple(uploads)
    except ValidationError as exc:
        raise invalid(exc) from None


def _json_object(text: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise field_problem("fields", "a JSON object of the custom fields: {\"name\": \"value\"}") from None
    if not isinstance(value, dict):
        raise field_problem("fields", "a JSON object of the custom fields: {\"name\": \"value\"}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a value here")
