"""The API's request and response bodies, as pydantic models and as the OpenAPI document shows them.

Requests forbid unknown fields: a misspelt ``priorty`` is a 422 that names it, not a ticket without
the priority the client meant. Lengths are bounded here for the document (and to refuse huge strings
before they are copied about); what needs the configuration (help topics, agents, custom field names)
is checked by ``intake/channel.py``, as for every channel.

A POST takes JSON or ``multipart/form-data`` (files as parts). FastAPI documents one body type per
route, so both are written into the document here (``request_body``), inlined: OpenAPI resolves a
``$ref`` against the whole document, not against the schema it is in.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mailgate.domain import Priority
from mailgate.web import problems

CONTENT_TYPE = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
StaffChannel = Literal["phone", "in_person", "chat", "letter", "other"]  # pipeline.submission.STAFF_CHANNELS
FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
FieldValue = Annotated[str, Field(max_length=1000)] | int | float | bool
MAX_ATTACHMENTS = 100


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PersonIn(_Request):
    email: str = Field(max_length=254, examples=["ken@customer.example"], json_schema_extra={"format": "email"})
    name: str = Field("", max_length=200, examples=["Ken Adams"])


Someone = Annotated[str, Field(max_length=500, examples=["Ken Adams <ken@customer.example>"])] | PersonIn


class AttachmentIn(_Request):
    filename: str = Field(max_length=255, examples=["invoice.pdf"])
    content_type: str = Field("application/octet-stream", max_length=255, pattern=CONTENT_TYPE)
    content_base64: str = Field(description="the file's bytes in base64 (RFC 4648, with padding)",
                                json_schema_extra={"format": "byte"})


class NewTicket(_Request):
    """A new ticket for the requester. ``channel``, ``agent`` and ``ack`` only with an agent-scoped key:
    staff entering a call (the key's own agent, or the agent named here when the key has none)."""

    requester: Someone
    subject: str = Field(min_length=1, max_length=250)
    body: str = Field(min_length=1)
    help_topic: str | None = Field(None, max_length=200)
    priority: Priority | None = None
    fields: dict[FieldName, FieldValue] | None = Field(None, max_length=50)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    channel: StaffChannel | None = Field(None, description="agent keys only; default phone")
    agent: str | None = Field(None, max_length=254, description="agent keys without a fixed agent: who took it")
    ack: bool | None = Field(None, description="agent keys only; false: no acknowledgment to the requester")


class NewMessage(_Request):
    """A message on a ticket: from the customer (``from``, the requester or a collaborator) with a
    create key, or from the key's agent (``note``: an internal note) with an agent key."""

    model_config = ConfigDict(populate_by_name=True)

    body: str = Field(min_length=1)
    from_: Someone | None = Field(None, alias="from")
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    note: bool | None = Field(None, description="agent keys only: an internal note, never sent to the customer")
    agent: str | None = Field(None, max_length=254, description="agent keys without a fixed agent: who writes")


class Created(BaseModel):
    number: str
    status: Literal["created", "added"] = Field(
        description="added only if the pipeline threaded it onto an existing ticket (a tagged subject is refused)")
    message_id: str
    url: str


class Added(BaseModel):
    number: str
    status: Literal["added"]
    message_id: str


class Held(BaseModel):
    """Stored, but held by a rule or by spam or flood control: no ticket until an admin releases it."""

    status: Literal["held"]
    reason: str | None
    message_id: str


class AttachmentOut(BaseModel):
    filename: str
    content_type: str
    size: int


class MessageOut(BaseModel):
    kind: Literal["customer", "agent", "note"]
    author: str
    body: str
    created_at: str | None
    attachments: list[AttachmentOut]


class TicketOut(BaseModel):
    number: str
    subject: str
    status: str
    merged_into: str | None
    priority: str
    help_topic: str | None
    requester: str
    channel: str
    fields: dict[str, str]
    created_at: str | None
    updated_at: str | None
    messages: list[MessageOut]


def inline(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every ``$ref`` replaced by what it names."""
    schema = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return dict(resolve(schema))


def _multipart(model: type[BaseModel]) -> dict[str, Any]:
    """The same fields as form parts: a person as ``Name <address>``, custom fields as a JSON object's
    text, booleans as true/false, and the files as repeated ``attachments`` parts."""
    schema = inline(model)
    props = schema["properties"]
    for name, prop in props.items():  # a part is there or not: no null
        kinds = [k for k in prop.pop("anyOf", []) if k != {"type": "null"}]
        if prop.get("default", "") is None:
            del prop["default"]
        if kinds:
            prop.update(kinds[0] if len(kinds) == 1 else {"anyOf": kinds})
        props[name] = prop
    for name in ("requester", "from"):
        if name in props:
            props[name] = {"type": "string", "maxLength": 500, "examples": ["Ken Adams <ken@customer.example>"]}
    for name in ("ack", "note"):
        if name in props:
            props[name] = {"type": "string", "enum": ["true", "false"]}
    if "fields" in props:
        props["fields"] = {"type": "string", "description": "a JSON object: {\"name\": \"value\", ...}"}
    props["attachments"] = {"type": "array", "items": {"type": "string", "format": "binary"}}
    return schema


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": inline(model)},
        "multipart/form-data": {"schema": _multipart(model)},
    }}}


def _problem(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {problems.MEDIA_TYPE: {"schema": problems.schema()}}}
    if headers:
        answer["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                             for name, text in headers.items()}
    return answer


ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("no API key, or an unknown one", {"WWW-Authenticate": "Bearer"}),
    403: _problem("the key lacks the scope, or may not act as it asked"),
    422: _problem("a field is missing, malformed or not allowed (``errors`` names each)"),
    429: _problem("over the key's rate, or too many failed logins from this address",
                  {"Retry-After": "seconds to wait"}),
    503: _problem("nothing was stored; try again", {"Retry-After": "seconds to wait"}),
}
POST_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: _problem("the body is not JSON, or multipart that cannot be read"),
    413: _problem("the request is over http.max_request_size"),
    415: _problem("neither application/json nor multipart/form-data"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem("no such ticket")}
