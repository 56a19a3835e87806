"""Text in whatever charset a mail claims: header bytes, encoded words, body parts.

Real mail lies about its charset (GBK labelled gb2312, Korean Windows text as ks_c_5601-1987,
``idna`` or a label holding a NUL), so every decoder here falls back per part and per word, never
per mail: losing a customer's words is worse than a few odd characters.
"""

from __future__ import annotations

import codecs
import re
from email.header import decode_header, make_header

ESCAPED_8BIT = re.compile("[\udc80-\udcff]+")  # raw 8-bit header bytes, as the parser keeps them


def fix_8bit(value: str) -> str:
    """Undeclared 8-bit bytes in a header: UTF-8 where they are valid UTF-8, else Windows-1252."""

    def decode(m: re.Match[str]) -> str:
        raw = m.group().encode("utf-8", "surrogateescape")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("cp1252", "replace")

    return ESCAPED_8BIT.sub(decode, value)


MAX_ENCODED_HEADER = 16 * 1024  # decoding encoded words costs the square of their number: cut beyond this


def decode_words(value: str) -> str:
    """RFC 2047 encoded-words decoded; a broken one leaves the raw text, which beats nothing."""
    if "=?" not in value:
        return value
    value = value[:MAX_ENCODED_HEADER]
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # one word in a charset Python does not know, or bytes its label lies about
        pass
    try:
        chunks = decode_header(value)
    except Exception:
        return value
    return "".join(c if isinstance(c, str) else decode_bytes(c, charset) for c, charset in chunks)


# Labels mail clients write that Python spells otherwise, or that are subsets of what the bytes are:
# GBK and GB18030 text goes out labelled gb2312, Korean Windows text as ks_c_5601-1987.
_CHARSET_ALIASES = {
    "gb2312": "gb18030", "gb_2312-80": "gb18030", "euc-cn": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "cp936": "gb18030", "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "euc-kr": "cp949",
    "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6", "windows-874": "cp874", "tis-620": "cp874",
    "shift_jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "big5": "big5hkscs",
}
# Text codecs that cannot decode with replacement or are not a charset at all, whatever a label says.
_NOT_CHARSETS = frozenset({"idna", "punycode", "unicode_escape", "raw_unicode_escape", "undefined"})


def codec_for(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when the label names nothing usable."""
    if not charset:
        return None
    label = "".join(ch for ch in str(charset) if ch.isprintable() and not ch.isspace()).strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Text in the labelled charset, else UTF-8, else Windows-1252: never an exception, never lost text."""
    codec = codec_for(charset)
    if codec is not None:
        try:
            return data.decode(codec, errors="replace")
        except Exception:  # a codec that refuses replacement, or a broken third-party one
            pass
    return decode_unknown(data)


def decode_unknown(payload: bytes) -> str:
    for fallback in ("utf-8", "cp1252"):
        try:
            return payload.decode(fallback)
        except UnicodeDecodeError:
            continue
    return payload.decode("latin-1")


