"""``mailgate tickets open``: staff enter a ticket that reached them by phone, in person or on paper.

The ticket is the requester's, made by the same pipeline as mail (``intake/channel.py``): the
rules, SLA plan and acknowledgment are those a mail would get, unless the agent chose a priority
or help topic, or ``--no-ack``. The agent is recorded as the one who entered it. The text comes
from stdin, or from ``$EDITOR`` when stdin is a terminal, as ``git commit`` does.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from mailgate.errors import ConfigError

EX_OK, EX_CONFIG, EX_DATAERR = 0, 1, 65
_TEMPLATE = "\n# Write what the customer said above. Lines starting with '#' are left out; an empty text cancels.\n"


def _from_editor() -> str:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w+", suffix=".txt", prefix="mailgate-ticket-", delete=False) as fh:
        fh.write(_TEMPLATE)
        path = fh.name
    try:
        done = subprocess.run([*shlex.split(editor), path], check=False)
        if done.returncode != 0:
            raise ConfigError([f"the editor ({editor}) exited with {done.returncode}; nothing was entered"])
        text = Path(path).read_text(encoding="utf-8")
    finally:
        os.unlink(path)
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")).strip("\n")


def _text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return str(args.text)
    if sys.stdin.isatty():
        return _from_editor()
    return sys.stdin.read()


def _fields(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError([f"--field {pair}: write NAME=VALUE"])
        out[name.strip()] = value
    return out


def run(args: argparse.Namespace, ctx: object) -> int:
    """Exit 0 with the number; 65 when the input or the pipeline refuses it (the reason on stderr)."""
    from mailgate.intake import channel
    from mailgate.pipeline.ingest import Context
    from mailgate.pipeline.submission import Submission

    assert isinstance(ctx, Context)
    try:
        requester = channel.person(args.requester)
        agent = channel.person(args.agent, "agent").email
        uploads = tuple(
            channel.Upload(Path(p).name, mimetypes.guess_type(p)[0] or "application/octet-stream",
                           Path(p).read_bytes())
            for p in args.attach
        )
        sub = Submission(channel=args.channel, client="cli", agent=agent, priority=args.priority,
                         help_topic=args.topic, fields=channel.fields(_fields(args.field)), ack=not args.no_ack)
        entry = channel.Entry(requester, channel.body(_text(args)), sub, channel.subject(args.subject, True), uploads)
        filed = channel.file_now(ctx, entry, "cli")
    except channel.Invalid as exc:
        print(f"--{exc.field.replace('_', '-')}: {exc.message}" if exc.field not in ("body",) else
              f"the text: {exc.message} (give it on stdin, with --text, or in $EDITOR)", file=sys.stderr)
        return EX_DATAERR
    if args.json:
        json.dump({"status": filed.status, "number": filed.number, "reason": filed.reason,
                   "message_id": filed.message_id}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if filed.status in ("created", "duplicate"):
        if not args.json:
            acked = "no acknowledgment" if args.no_ack else f"acknowledged to {requester.email}"
            print(f"ticket {filed.number} opened for {requester.email} ({args.channel}, entered by {agent}; {acked})")
        return EX_OK
    print(f"not opened: {filed.reason}", file=sys.stderr)
    return EX_DATAERR
