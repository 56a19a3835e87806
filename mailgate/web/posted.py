"""A browser's form post, read within bounds: its text fields and its files, checked against ``http.form``.

The whole body is already bounded by ``http.max_request_size`` (``app.BodyLimit``); here each text
field is bounded too (a message may be ``max_text`` characters of up to four bytes each), and so are
the number of fields and files, so a post built to make the parser work is refused early. What is
wrong with a post the customer can fix (a file too many, too large) is said next to the field;
what a browser would never send is a 400 or 413 page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailgate.config.http import Http
from mailgate.intake import channel
from mailgate.web import problems
from mailgate.web.render import human_size

MAX_FIELDS = 30
MAX_FILES = 50  # more than a form allows (``max_attachments`` is at most 20): said next to the field
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


class Unreadable(Exception):
    """Not a form a browser would send, or larger than the server takes: a page with this status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Posted:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[UploadFile] = field(default_factory=list)

    def text(self, name: str) -> str:
        return self.fields.get(name, "")


async def read(request: Request, http: Http) -> Posted:
    """The post's first value of each text field, and its files (an empty file input sends a part
    without a name: left out). ``Unreadable`` when it cannot be read."""
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS,
                                  max_part_size=http.form.max_text * 4 + 65536)
    except problems.Problem as exc:  # the body grew past http.max_request_size while it came in
        raise Unreadable(exc.status) from None
    except StarletteHTTPException as exc:
        raise Unreadable(413 if "maximum size" in str(exc.detail) else 400) from None
    posted = Posted()
    for name, value in form.multi_items():
        if isinstance(value, str):
            posted.fields.setdefault(name, value)
        elif value.filename or value.size:
            posted.files.append(value)
    return posted


def _media_type(given: str | None) -> str:
    """The browser's word for the file's type, if it is one; never anything that could break a header."""
    value = (given or "").split(";", 1)[0].strip().lower()
    return value if _MEDIA_TYPE.fullmatch(value) else "application/octet-stream"


async def uploads(posted: Posted, http: Http, field_name: str = "attachments") -> tuple[channel.Upload, ...]:
    """The files as the channel takes them, after the form's limits: ``channel.Invalid`` names the first
    one broken (how many, each one's size, all together)."""
    limits = http.form
    if len(posted.files) > limits.max_attachments:
        if limits.max_attachments == 0:
            raise channel.Invalid(field_name, "this form takes no files")
        raise channel.Invalid(field_name, f"at most {limits.max_attachments} files (you chose {len(posted.files)})")
    for upload in posted.files:
        if (upload.size or 0) > limits.max_attachment_size:
            raise channel.Invalid(field_name, f"{upload.filename or 'a file'} is larger than "
                                              f"{human_size(limits.max_attachment_size)}")
    out = [channel.Upload(f.filename or "attachment", _media_type(f.content_type), await f.read())
           for f in posted.files]
    if channel.attachments_total(out) > http.max_request_size:
        raise channel.Invalid(field_name, f"the files together are larger than {human_size(http.max_request_size)}")
    return tuple(out)


def message(text: str, http: Http) -> str:
    """A message's text, at most ``http.form.max_text`` characters."""
    body = channel.body(text)
    if len(body) > http.form.max_text:
        raise channel.Invalid("body", f"at most {http.form.max_text} characters (this one has {len(body)})")
    return body


async def close(posted: Posted) -> None:
    """Let go of the spooled files now, not when the garbage collector gets to them."""
    for upload in posted.files:
        await upload.close()
