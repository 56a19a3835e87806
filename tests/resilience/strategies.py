"""Hypothesis strategies for hostile mail, shared by the property tests.

Real intake sees everything in here: MIME trees nested past any sane depth, headers repeated,
missing or a megabyte long, line ends of three kinds, 8-bit bytes and NULs where 7-bit text
belongs, charset labels that name no charset (or a codec that is not one), encoded words and
RFC 2231 parameters broken in every way a client or an attacker can break them. Each strategy
returns bytes (or ``str`` where the target takes text) so the tests can feed them straight in.
"""

from __future__ import annotations

import base64
import quopri
from pathlib import Path

from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
# every mail in the named corpus and any collection below it, read once
CORPUS_MAILS: tuple[tuple[str, bytes], ...] = tuple(
    (str(p.relative_to(CORPUS)), p.read_bytes()) for p in sorted(CORPUS.rglob("*.eml"))
)
MB = 1 << 20

# --------------------------------------------------------------------------- small vocabularies
VALID_CHARSETS = (
    "utf-8", "UTF-8", "us-ascii", "iso-8859-1", "latin1", "windows-1252", "cp1252", "iso-8859-15", "koi8-r",
    "shift_jis", "euc-jp", "iso-2022-jp", "big5", "gb2312", "gbk", "gb18030", "euc-kr", "ks_c_5601-1987",
    "utf-16", "utf-16le", "utf-16be", "utf-32", "utf-7", "utf-8-sig", "iso-8859-8-i", "tis-620", "windows-874",
)
# labels that name nothing, a codec that is no charset, or text a header parser chokes on
WEIRD_CHARSETS = (
    "idna", "IDNA", "punycode", "utf\x008", "utf-8\x00", "\x00", " utf-8 ", "utf 8", "x-unknown", "unknown-8bit",
    "", '""', "base64", "hex", "zlib", "rot13", "rot_13", "bz2", "uu", "quopri", "unicode_escape",
    "raw_unicode_escape", "undefined", "mbcs", "oem", "charmap", "utf-8'en'", "..", "../../etc/passwd",
    "=?utf-8?q?x?=", "utf-8\r\n", "a" * 300, "%", "*", "utf-8; charset=idna", "\u00ff\u00fe", "\udcff",
    "ascii\t", "cp65001", "x-mac-roman", "macintosh", "latin-1\x7f",
)
HEADER_NAMES = (
    "From", "To", "Cc", "Bcc", "Reply-To", "Sender", "Subject", "Message-ID", "In-Reply-To", "References",
    "Date", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "MIME-Version",
    "Auto-Submitted", "Precedence", "List-Id", "List-Unsubscribe", "X-Autoreply", "X-Auto-Response-Suppress",
    "Return-Path", "X-Failed-Recipients", "X-Loop", "Received", "Delivered-To", "X-Mailgate-Loop",
    "X-Mailgate-Ticket", "x-MAILGATE-role", "Authentication-Results", "Thread-Index", "Content-Length",
    "Resent-From", "Disposition-Notification-To",
)
CONTENT_TYPES = (
    "text/plain", "text/html", "text/enriched", "text/rfc822-headers", "application/octet-stream",
    "application/pdf", "application/ms-tnef", "image/png", "message/delivery-status", "message/rfc822",
    "message/global", "message/partial", "multipart/mixed", "text/", "/", "", "TEXT/PLAIN", "text/plain/x",
    "x" * 150 + "/y",
)
TRANSFER_ENCODINGS = (
    "7bit", "8bit", "binary", "base64", "BASE64", "quoted-printable", "Quoted-Printable", "x-uuencode",
    "uuencode", "x-uue", "base-64", "base64 base64", "", "quoted-printable; x=y", "\x00", "\u00e9",
    "base64\r\n\tquoted-printable",
)
LINE_ENDS = (b"\r\n", b"\n", b"\r")

_WORDS = st.sampled_from(
    ["Re:", "AW:", "Fwd:", "[#123456]", "[#12345]", "#1234567", "printer", "on fire", "\u00fcber", "\U0001f525",
     "\u202e", "\u2028", "\x85", "\x00", "\x1b[31m", "\x9b", "\t", "=?", "?=", "<", ">", "@", '"', "(", ")",
     ",", ";", ":", "\\"]
)
_TEXT = st.one_of(st.text(max_size=40), st.lists(_WORDS, max_size=8).map(" ".join))
_BYTES = st.binary(max_size=60)


def _enc(text: str, charset: str) -> bytes:
    try:
        return text.encode(charset.strip("\x00 \r\n\t\""))
    except (LookupError, UnicodeError, ValueError, TypeError):
        return text.encode("utf-8", "surrogatepass")


def charsets() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(VALID_CHARSETS), st.sampled_from(WEIRD_CHARSETS), st.text(max_size=12))


# bytes that break their label's promise: GBK under gb2312, UTF-16 without BOM, UTF-7 garbage
_LYING_BODIES = st.sampled_from(
    [
        ("gb2312", b"\x81\x40\x95\x5b\xfe\x4f gbk only"),
        ("gb2312", "\u4e2d\u6587".encode("gb18030") + b"\x81\x30\x81\x30"),
        ("utf-16", "no bom".encode("utf-16-le")),
        ("utf-16", b"\x00"),
        ("utf-16", b"\xd8\x00\xdc"),
        ("utf-7", b"+ZZZ- +AGEAYgBj +2D0- + +-"),
        ("utf-7", b"+2D3dAA-+2D0-"),
        ("us-ascii", "\u00fcber".encode()),
        ("utf-8", b"\xed\xa0\x80 \xc0\xaf \xff"),
        ("idna", b"xn--ls8h.example .. \xff"),
        ("utf\x008", b"nul in the label"),
        ("iso-2022-jp", b"\x1b$B\x1b(B\x1b$"),
        ("ks_c_5601-1987", b"\xb0\xa1\xff\xff"),
    ]
)


# --------------------------------------------------------------------------- RFC 2047 / 2231 garbage
@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """One encoded word, valid or broken in its charset, its encoding letter or its payload."""
    charset = draw(charsets())
    if draw(st.booleans()):
        charset += draw(st.sampled_from(["*en", "*", "*en-US*x"]))
    letter = draw(st.sampled_from(["q", "Q", "b", "B", "x", "", "qq"]))
    raw = _enc(draw(_TEXT), charset) if draw(st.booleans()) else draw(_BYTES)
    payload = draw(
        st.one_of(
            st.just(base64.b64encode(raw).decode()),
            st.just(quopri.encodestring(raw, header=True).decode("ascii", "replace")),
            st.sampled_from(["YQ", "Y===", "!!!", "====", "=", "=ZZ", "=4", "_", "a b", "?", "=?utf-8?q?x?=",
                             "=3D=3Futf-8=3Fq=3Fnested=3F=3D", "=00", "AA==" * 20, "%FF"]),
            st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=20),
        )
    )
    return f"=?{charset}?{letter}?{payload}?="


@st.composite
def rfc2231_params(draw: st.DrawFn, name: str = "filename") -> str:
    """A filename/name parameter: plain, quoted, encoded word, or RFC 2231 with broken continuations."""
    path = draw(
        st.sampled_from(["report.pdf", "../../etc/passwd", "..\\..\\boot.ini", "..", ".", "/", "a/b\\c", "C:\\x.exe",
                         "\u00dcbersicht M\u00e4rz.pdf", " ", "\x00", "a\x00b", "a\nb", "con", "winmail.dat",
                         "x" * 300, ".hidden", "%2e%2e%2f", "\u202egpj.exe"])
    )
    quoted = path.replace("\\", "\\\\").replace('"', '\\"')
    pct = "".join(f"%{b:02X}" for b in path.encode("utf-8", "surrogatepass"))
    forms = [
        f'{name}="{quoted}"',
        f"{name}={path}",
        f'{name}="{draw(encoded_words())}"',
        f"{name}*=utf-8''{pct}",
        f"{name}*={draw(charsets())}'{draw(_TEXT)}'{pct}",
        f"{name}*0*=utf-8''{pct[: len(pct) // 2]}; {name}*1*={pct[len(pct) // 2 :]}",
        f"{name}*0*=utf-8''%2e%2e; {name}*2*=%2f; {name}*1=\"{quoted}\"",  # gap and order in the continuations
        f'{name}*0="a"; {name}*0="b"; {name}*00=c; {name}*-1=d; {name}*x=e',
        f"{name}*=''''; {name}*0*='%ZZ",
        f"{name}*=%; {name}*0*",
        f'{name}="{quoted}"; {name}="second"',
        f"{name}*1*=%2e%2e%2f",
    ]
    return draw(st.sampled_from(forms))


# --------------------------------------------------------------------------- header values
@st.composite
def addresses(draw: st.DrawFn) -> str:
    one = st.one_of(
        st.sampled_from(
            ["pat@customer.example", "Pat <PAT@Customer.Example>", '"Miller, John" <john@contoso.com>',
             "=?utf-8?q?J=C3=BCrgen?= <j@x.example>", "undisclosed-recipients:;", "group: a@b.c, d@e.f;",
             "(comment) a@b.c (another)", "a@b.c (", "<>", "<@>", "@", "a@", "@b", "a@@b", "<a@b.c", "a b@c.d",
             '"a\\"b"@c.d', "a\x00b@c.d", "<a\x01@b.c>", "Pat\x85Q <p@q.r>", "P\u00e4t@\u00fc.example",
             "xn--ls8h@xn--ls8h.example", "support@example.com", "support+t1-abcdefghij@example.com",
             "mailer-daemon@mx.example", "a@b.c <d@e.f>", "<<a@b.c>>", "a@[127.0.0.1]", "\"\" <x@y.z>"]
        ),
        st.builds(lambda w, a: f"{w} <{a}>", encoded_words(), st.sampled_from(["a@b.c", "X@Y.Z", "bad"])),
        _TEXT,
    )
    parts = draw(st.lists(one, min_size=1, max_size=5))
    sep = draw(st.sampled_from([", ", ",", ";", ",\r\n ", ",\n\t", " "]))
    return sep.join(parts)


# no whitespace and no angle brackets, so what the id pattern takes is all of it, controls included
_ID_TEXT = st.text(st.characters(exclude_categories=["Zs", "Cs"], exclude_characters="<>\t\r\n\x0b\x0c"), min_size=1,
                   max_size=12)


def message_ids() -> st.SearchStrategy[str]:
    one = st.one_of(
        st.sampled_from(
            ["<a@b.c>", "a@b.c", "<a b@c>", "<a\x00b@c>", "<a\x01b@c>", "<>", "<<a@b>>", "a<b@c", "<a@b", "a@b>",
             "<mg.1.AAAAAAAA.BBBBBB.CCCCCCCCCCCCCCCC@example.com>", "<" + "x" * 1000 + "@y>", "<a@b.c> <d@e.f>",
             "(comment) <a@b.c>", "<\u00e9@b.c>", "=?utf-8?q?<a@b.c>?=", "<a@b.c>\r\n <d@e.f>"]
        ),
        st.builds("<{}@{}>".format, _TEXT, _TEXT),
        st.builds("<{}@{}>".format, _ID_TEXT, _ID_TEXT),
        st.lists(st.builds("<{}@x.example>".format, st.integers(0, 999)), max_size=300).map(" ".join),
    )
    return one


def header_values() -> st.SearchStrategy[str]:
    return st.one_of(
        _TEXT,
        st.lists(st.one_of(encoded_words(), _TEXT), max_size=6).map(" ".join),
        st.lists(encoded_words(), max_size=6).map("".join),  # adjacent words, no space between
        addresses(),
        message_ids(),
        st.sampled_from(["Mon, 02 Mar 2026 10:00:00 +0100", "Mon, 99 Jan 99999 99:99:99 +9999", "-0000",
                         "Thu, 01 Jan 1970 00:00:00 -2400", "yesterday", "0", "Mon, 31 Feb 2026 25:61:61 GMT"]),
        st.builds(lambda t, n, fold: fold.join([t] * n), _TEXT, st.integers(1, 50),
                  st.sampled_from(["\r\n ", "\n ", "\r\n\t", " ", "\n", "\r"])),
    )


def _header_line(name: str, value: str | bytes, end: bytes) -> bytes:
    data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    return name.encode("utf-8", "surrogateescape") + b": " + data + end


@st.composite
def header_soup(draw: st.DrawFn, end: bytes | None = None, max_lines: int = 15) -> bytes:
    """A header block: repeated, missing and duplicated fields, odd names, 8-bit bytes, NULs, folds."""
    end = end if end is not None else draw(st.sampled_from(LINE_ENDS))
    name = st.one_of(
        st.sampled_from(HEADER_NAMES),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), max_size=20),
        st.sampled_from(["", " ", "From ", ">From", "Sub ject", "\u00dcber", "X-\x00", "X-\udcff"]),
    )
    value = st.one_of(header_values(), _BYTES)
    typed = st.one_of(  # a field with the kind of value it is meant to hold, broken in its own ways
        st.tuples(st.sampled_from(["Message-ID", "In-Reply-To", "References"]), message_ids()),
        st.tuples(st.sampled_from(["From", "To", "Cc", "Reply-To", "Sender", "X-Failed-Recipients"]), addresses()),
        st.tuples(st.just("Subject"), st.lists(st.one_of(encoded_words(), _TEXT), max_size=6).map(" ".join)),
        st.tuples(st.just("Content-Type"), st.builds("{}; charset={}".format, st.sampled_from(CONTENT_TYPES),
                                                     charsets())),
    )
    lines = draw(st.lists(st.one_of(st.tuples(name, value), typed), max_size=max_lines))
    if draw(st.integers(0, 3)):  # usually a sender and a recipient, so the later stages run too
        lines = [("From", draw(addresses())), ("To", "support@example.com"), *lines]
    out = b"".join(_header_line(n, v, draw(st.sampled_from([end, end, end, *LINE_ENDS]))) for n, v in lines)
    if draw(st.booleans()):
        out = draw(st.sampled_from([b"From pat@x Mon Mar  2 10:00:00 2026" + end, b" leading fold" + end,
                                    b"no colon at all" + end, b"\x00" + end, b"\xef\xbb\xbf"])) + out
    return out


# --------------------------------------------------------------------------- MIME trees
TREE_BYTES = 200_000  # what repeating one child may add up to; big_recipes is the strategy for size
_BOUNDARY_CHARS = st.text(alphabet=st.sampled_from("abcXYZ019'()+_,-./:=? "), min_size=1, max_size=20)
_REGEX_BOUNDARIES = ("(.*)+[", "a|b", "\\", "$^", "?*+{1,2}", "[[:alpha:]]", "--", "b--", "\\Q\\E", "(?i)")


def boundaries() -> st.SearchStrategy[str]:
    return st.one_of(_BOUNDARY_CHARS, st.sampled_from(_REGEX_BOUNDARIES), st.just("x" * 100), st.just(""))


@st.composite
def _payload(draw: st.DrawFn, cte: str, charset: str) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        label, data = draw(_LYING_BODIES)
        return data if label == charset else data + _enc(draw(_TEXT), charset)
    data = _enc(draw(_TEXT), charset) if draw(st.booleans()) else draw(_BYTES)
    kind = cte.strip().lower()
    if draw(st.integers(0, 4)) == 0:  # the encoding the header names is not the one the body has
        return draw(st.sampled_from([b"!!!===a", b"=\n=ZZ=", b"begin 644 f\n!!!\nend\n", b"YQ", data]))
    if kind == "base64":
        return base64.encodebytes(data)
    if kind == "quoted-printable":
        return quopri.encodestring(data)
    return data


@st.composite
def leaf_part(draw: st.DrawFn, end: bytes) -> bytes:
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    charset = draw(charsets())
    cte = draw(st.sampled_from(TRANSFER_ENCODINGS))
    head = [f"Content-Type: {ctype}; charset=\"{charset}\"" if draw(st.booleans()) else f"Content-Type: {ctype}"]
    if draw(st.booleans()):
        head.append(f"Content-Transfer-Encoding: {cte}")
    if draw(st.booleans()):
        disposition = draw(st.sampled_from(["attachment", "inline", "ATTACHMENT", "", "form-data", "x"]))
        head.append(f"Content-Disposition: {disposition}; {draw(rfc2231_params('filename'))}")
    if draw(st.booleans()):
        head[0] += f"; {draw(rfc2231_params('name'))}"
    body = draw(_payload(cte, charset))
    if ctype == "text/html" and draw(st.booleans()):
        body += draw(st.sampled_from([b"<p>hi<br>there</p>", b"<script>x</script><b onclick=x>b</b>",
                                      b"<blockquote><blockquote>q", b"<a <b <c", b"<!--", b"&#0;&#xd800;"]))
    if ctype == "message/delivery-status":
        body = draw(st.sampled_from([b"Final-Recipient: rfc822; Bad@X.Example\nAction: failed\nStatus: 5.1.1\n",
                                     b"Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822;\x00a b@c\nAction: failed\n",
                                     b"Final-Recipient: ;\nAction: delayed\nStatus: 4.0.0\n", body]))
    lines = "\n".join(head).replace("\n", end.decode()).encode("utf-8", "surrogateescape")
    return lines + end + end + body


@st.composite
def mime_node(draw: st.DrawFn, depth: int, end: bytes, repeat_budget: int) -> bytes:
    """A part whose subtree nests up to ``depth`` deep; children may repeat so parts number in the hundreds."""
    if depth <= 0 or draw(st.integers(0, 5)) == 0:
        return draw(leaf_part(end))
    kind = draw(st.sampled_from(["multipart/mixed", "multipart/alternative", "multipart/related",
                                 "multipart/report; report-type=delivery-status", "multipart/signed",
                                 "multipart/digest", "multipart/x-unknown", "message/rfc822", "message/global"]))
    if kind.startswith("message/"):
        inner = draw(header_soup(end, max_lines=3)) + draw(mime_node(depth - 1, end, repeat_budget))
        return f"Content-Type: {kind}".encode() + end + end + inner
    boundary = draw(boundaries())
    declared = draw(st.sampled_from([f'; boundary="{boundary}"', f"; boundary={boundary}", "", '; boundary=""',
                                     f'; boundary="{boundary}"; boundary="other"', f"; BOUNDARY = {boundary}"]))
    used = boundary if draw(st.integers(0, 5)) else draw(boundaries())  # sometimes a boundary nobody declared
    body = b""
    for i in range(1 + draw(st.integers(0, 3))):  # the first child carries the depth, the others are leaves
        times = min(draw(st.sampled_from([1, 1, 1, 2, 10, 100, 300])), repeat_budget)
        repeat_budget = max(1, repeat_budget // times)  # repeats multiply down the tree: keep the product bounded
        child = draw(mime_node(depth - 1, end, repeat_budget) if i == 0 else leaf_part(end))
        times = max(1, min(times, TREE_BYTES // max(1, len(child))))  # hundreds of parts, not megabytes
        body += (b"--" + used.encode("utf-8", "surrogateescape") + end + child + end) * times
    delimiter = b"--" + used.encode("utf-8", "surrogateescape")
    closing = draw(st.sampled_from([delimiter + b"--" + end, b"", delimiter + end]))
    preamble = draw(st.sampled_from([b"", b"This is a multi-part message." + end, b"--" + end]))
    return f"Content-Type: {kind}{declared}".encode("utf-8", "surrogateescape") + end + end + preamble + body + closing


@st.composite
def mime_mails(draw: st.DrawFn) -> bytes:
    end = draw(st.sampled_from(LINE_ENDS))
    depth = draw(st.integers(0, 30))
    return draw(header_soup(end)) + b"MIME-Version: 1.0" + end + draw(mime_node(depth, end, 300))


@st.composite
def soup_mails(draw: st.DrawFn) -> bytes:
    """Header soup over a short body: the headers are the test."""
    end = draw(st.sampled_from(LINE_ENDS))
    return draw(header_soup(end)) + end + _enc(draw(_TEXT), "utf-8") + end


# --------------------------------------------------------------------------- sheer size
# Units that cost the parser the most per byte: repeated up to about a megabyte they find the work
# that grows faster than the input (a hang in the making).
BIG_HEADER_UNITS = (
    b"a@b.c, ", b"a@b.c,\r\n ", b"=?utf-8?q?a?= ", b"=?utf-8?b?YQ==?=", b"(", b"<", b"\"\\\"", b"<a@b> ", b"x\r\n ",
    b"; a=b", b"; name*%d*=a", b">", b"\x00", b"\xff", b"=?", b"\\",
)
BIG_BODY_UNITS = (
    b"<a ", b"<div>", b"<blockquote>", b"<li>", b"<table><tr><td>", b"&#", b"<!--", b"</", b"\x00", b"> quote\n",
    b"On Mon, x wrote:\n", b"From: x\n", b"_" * 30 + b"\n", b"x" * 1000, b"\r", b"=\n", b"--b\n\nx\n",
)


BIG_WHERE = ("header", "headers", "text", "html", "parts")
BIG_HEADERS = ("To", "Cc", "From", "Subject", "References", "Content-Type", "Message-ID", "Date", "Reply-To",
               "X-Failed-Recipients", "X-A", "Received")
BIG_SIZES = (1_000, 10_000, 100_000, 300_000)
BIG_SIZES_SOAK = (*BIG_SIZES, 900_000, MB - 200)  # up to the default intake.limits.max_header_bytes


def build_big(where: str, unit: bytes, size: int, name: str) -> bytes:
    """``unit`` repeated to about ``size`` bytes in one header (``header``), as many header lines
    (``headers``), as a plain or HTML body, or as that many MIME parts (``parts``)."""
    times = max(1, size // len(unit))
    blob = b"".join(unit % i for i in range(times // 3)) if b"%d" in unit else unit * times
    head = b"From: Pat <pat@customer.example>\nTo: support@example.com\n"
    field = name.encode()
    if where == "header":
        value = b"text/plain" + blob if name == "Content-Type" else blob
        return head + field + b": " + value + b"\n\nbody\n"
    if where == "headers":
        return head + (field + b": " + unit + b"\n") * max(1, size // (len(unit) + 8)) + b"\nbody\n"
    if where == "parts":
        part = b"--b\nContent-Type: text/plain\n\n" + unit + b"\n"
        return head + b"Content-Type: multipart/mixed; boundary=b\n\n" + part * (size // len(part)) + b"--b--\n"
    ctype = b"text/html" if where == "html" else b"text/plain"
    return head + b"Content-Type: " + ctype + b"; charset=utf-8\n\n" + blob + b"\n"


@st.composite
def big_recipes(draw: st.DrawFn, sizes: tuple[int, ...] = BIG_SIZES) -> tuple[str, bytes, int, str]:
    """Arguments for ``build_big``: a small value to print when it fails, a megabyte to parse."""
    where = draw(st.sampled_from(BIG_WHERE))
    unit = draw(st.sampled_from(BIG_BODY_UNITS if where in ("text", "html") else BIG_HEADER_UNITS))
    return where, unit, draw(st.sampled_from(sizes)), draw(st.sampled_from(BIG_HEADERS))


# --------------------------------------------------------------------------- corpus mutation
def _at(fraction: int, length: int) -> int:
    return fraction * (length + 1) // (1 << 16)


_WHERE = st.integers(0, (1 << 16) - 1)  # a position as a fraction of the current length


def _mutate_lines(draw: st.DrawFn, data: bytes, op: str) -> bytes:
    lines = data.split(b"\n")
    head_end = lines.index(b"") if b"" in lines else len(lines)
    scope = head_end if op == "dup_header" and head_end else len(lines)
    a, b = _at(draw(_WHERE), scope - 1), _at(draw(_WHERE), scope - 1)
    if op == "dup_header":
        lines[a:a] = [lines[a]] * draw(st.integers(1, 20))
    elif op == "swap_lines":
        lines[a], lines[b] = lines[b], lines[a]
    else:
        del lines[a]
    return b"\n".join(lines)


def _mutate_bytes(draw: st.DrawFn, data: bytearray, op: str) -> bytearray:
    n = len(data)
    i, j = sorted((_at(draw(_WHERE), n), _at(draw(_WHERE), n)))
    if op == "flip" and n:
        data[min(i, n - 1)] ^= 1 << draw(st.integers(0, 7))
    elif op == "insert":
        data[i:i] = draw(st.one_of(_BYTES, st.sampled_from([b"\n", b"\r\n\r\n", b"--", b"=?", b"\n ", b":"])))
    elif op == "delete":
        del data[i:j]
    elif op == "dup_range":
        data[j:j] = data[i:j] * draw(st.integers(1, 50))
    elif op == "truncate":
        del data[i:]
    elif op == "nul":
        data[i:i] = b"\x00"
    elif op == "splice":
        _, other = draw(st.sampled_from(CORPUS_MAILS))
        data = data[:i] + other[_at(draw(_WHERE), len(other)) :]
    elif op == "line_ends":
        old, new = draw(st.sampled_from([(b"\r\n", b"\n"), (b"\n", b"\r\n"), (b"\n", b"\r"), (b"\r\n", b"\r")]))
        data = bytearray(bytes(data).replace(old, new))
    return data


@st.composite
def mutated_corpus(draw: st.DrawFn) -> bytes:
    """A corpus mail after a few byte- and line-level mutations (and sometimes spliced with another)."""
    _, raw = draw(st.sampled_from(CORPUS_MAILS))
    data = bytearray(raw)
    ops = st.sampled_from(["flip", "insert", "delete", "dup_header", "dup_range", "truncate", "splice", "line_ends",
                           "nul", "swap_lines", "drop_line"])
    for op in draw(st.lists(ops, min_size=1, max_size=8)):
        if op in ("dup_header", "swap_lines", "drop_line"):
            data = bytearray(_mutate_lines(draw, bytes(data), op))
        else:
            data = _mutate_bytes(draw, data, op)
    return bytes(data)


# --------------------------------------------------------------------------- everything
def any_mail() -> st.SearchStrategy[bytes]:
    return st.one_of(mime_mails(), soup_mails(), mutated_corpus())
