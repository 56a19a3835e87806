"""``http:`` in mailgate.yaml: the HTTP API, the contact form and the status page, on one listener.

Absent, serve opens no HTTP port (the metrics listener is its own, ``metrics:``). API keys are
stored as the sha256 of the key, never the key (``mailgate api-key new NAME`` prints both): a
leaked config file gives nobody access. The contact form is off unless ``form.enabled``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from mailgate.config.fields import Duration, Email, Size, _Listen, _Strict
from mailgate.config.intake_policy import Rung, parse_rung

Scope = Literal["create", "read", "agent"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _rung(value: Any) -> Any:
    return value if isinstance(value, Rung) else parse_rung(value)


RateLimit = Annotated[Any, BeforeValidator(_rung)]


class ApiKey(_Strict):
    """One client of the API. ``agent`` scope acts as agents: as ``agent`` alone when it is set (a key
    of Jane's), else as the agent each request names (an integration staff use, e.g. a phone system)."""

    name: str
    sha256: str
    scopes: list[Scope] = Field(min_length=1)
    agent: Email | None = None
    rate: RateLimit = Field(default_factory=lambda: parse_rung("120/1m"))

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"a key's name is letters, digits, '_', '.', '-' (at most 64), not {value!r}")
        return value

    @field_validator("sha256")
    @classmethod
    def _hash(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("sha256 is the key's SHA-256 in 64 hex digits (mailgate api-key new NAME prints it), "
                             "never the key itself")
        return value

    @model_validator(mode="after")
    def _agent_needs_scope(self) -> ApiKey:
        if self.agent is not None and "agent" not in self.scopes:
            raise ValueError(f"key {self.name}: 'agent: {self.agent}' goes with the scope 'agent'")
        return self


class ContactForm(_Strict):
    """The web form at ``/contact`` and the status page its acknowledgment links to."""

    enabled: bool = False
    title: str = "Contact support"
    help_topic: str | None = None  # the form's tickets start in this topic (rules may still move them)
    max_attachments: int = Field(default=3, ge=0, le=20)
    max_attachment_size: Size = 5 * 2**20
    max_text: int = Field(default=20000, ge=100)  # characters of the message
    rate: RateLimit = Field(default_factory=lambda: parse_rung("10/10m"))  # per client address


class Http(_Listen):
    listen: str = "127.0.0.1:8025"
    # where customers reach this listener (a reverse proxy's https address); links in mail start with it
    public_url: str | None = None
    max_request_size: Size = 10 * 2**20
    api_keys: list[ApiKey] = Field(default_factory=list)
    form: ContactForm = ContactForm()
    status_link_valid: Duration = timedelta(days=180)  # how long an acknowledgment's status link works

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(f"public_url must be an http(s) address, e.g. https://help.example.com, not {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _unique(self) -> Http:
        seen: set[str] = set()
        for key in self.api_keys:
            if key.name in seen or key.sha256 in seen:
                raise ValueError(f"api_keys: {key.name} is listed twice (by name or by key)")
            seen |= {key.name, key.sha256}
        return self

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.listen}"
