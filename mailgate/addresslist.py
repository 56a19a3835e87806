"""Read an address header as mail clients read it, not as Python 3.11's ``getaddresses`` does.

Two ways the standard library's legacy parser gets the sender wrong, each of
which lets a sender choose whose name a ticket is under and who gets our mail:

- ``From: alice@example.com <bob@example.com>`` gives alice; every client
  answers bob, the address in angle brackets.
- a quoted display name folded over two lines, ``"Pat\\r\\n Bcc: victim@x"
  <pat@...>``, gives the victim.

So the header is unfolded first, split on commas outside quotes, angle brackets
and comments, and in each element the last ``<...>`` is the address and what
comes before it the name. Groups (``team: a@x, b@y;``) give their members.
"""

from __future__ import annotations

import re

_FOLD = re.compile(r"\r?\n[ \t]")
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|<[^<>]*>?|[^",<(]+|[,<(]')


def _elements(value: str) -> list[list[str]]:
    """The tokens of each comma-separated element; commas inside quotes, <> or () do not split."""
    out: list[list[str]] = [[]]
    for token in _TOKENS.findall(value):
        if token == ",":
            out.append([])
        else:
            out[-1].append(token)
    return out


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return name.strip()


def _without_group_name(tokens: list[str]) -> list[str]:
    """Drop a group's name (``team: a@x, b@y;``): up to the first colon outside quotes, comments and <>."""
    for i, token in enumerate(tokens):
        if token[:1] in ('"', "(", "<"):
            continue
        if "@" in token.partition(":")[0]:
            return tokens  # an address comes first: no group name here
        if ":" in token:
            rest = token.partition(":")[2]
            return ([rest] if rest else []) + tokens[i + 1 :]
    return tokens


def _words(tokens: list[str]) -> str:
    """The tokens as text, comments left out (a comment is never part of a name or an address)."""
    return "".join(t for t in tokens if not t.startswith("("))


def addresses(values: list[str]) -> list[tuple[str, str]]:
    """(display name, address) per mailbox in the given header values; the address as written."""
    out: list[tuple[str, str]] = []
    for value in values:
        for tokens in _elements(_FOLD.sub(" ", value)):
            tokens = _without_group_name(tokens)
            text = "".join(tokens).strip().rstrip(";").strip()
            if not text:
                continue
            angles = [i for i, t in enumerate(tokens) if t.startswith("<")]
            if angles and tokens[angles[-1]].endswith(">"):
                last = angles[-1]
                words = [_unquote(t) if t.startswith('"') else t for t in tokens[:last] if not t.startswith("(")]
                name = " ".join("".join(words).split())
                out.append((name, tokens[last][1:-1].strip()))
                continue
            comments = [t for t in tokens if t.startswith("(")]
            address = _words(tokens).strip().rstrip(";").strip()
            name = comments[-1][1:-1].strip() if comments else ""  # "pat@x (Pat Smith)", the old style
            out.append((name, address))
    return out
