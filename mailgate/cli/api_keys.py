"""``mailgate api-key new NAME``: a fresh API key, shown once, and the lines that let it in.

Only the key's SHA-256 goes into mailgate.yaml (``http.api_keys``), so the key itself is printed here
and nowhere else: whoever runs the command hands it to the client. The entry is checked by the same
model ``serve`` loads, so what is printed is what ``check-config`` accepts.
"""

from __future__ import annotations

import argparse
import sys

import yaml
from pydantic import ValidationError

EX_OK, EX_USAGE = 0, 1


def run(args: argparse.Namespace) -> int:
    from mailgate.config.http import ApiKey
    from mailgate.web.keys import new_key

    scopes = [s.strip() for s in (args.scopes or ("agent" if args.agent else "create,read")).split(",") if s.strip()]
    key, digest = new_key()
    entry: dict[str, object] = {"name": args.name, "sha256": digest, "scopes": scopes}
    if args.agent:
        entry["agent"] = args.agent
    try:
        checked = ApiKey.model_validate(entry)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(p) for p in error["loc"])
            print(f"api-key new: {where + ': ' if where else ''}{error['msg'].removeprefix('Value error, ')}",
                  file=sys.stderr)
        return EX_USAGE
    entry["agent"] = checked.agent
    if checked.agent is None:
        del entry["agent"]
    print("The key (shown this once; give it to the client, it is stored nowhere):\n")
    print(f"    {key}\n")
    print("Add this under http.api_keys in mailgate.yaml, then reload serve (SIGHUP):\n")
    snippet = yaml.safe_dump([entry], sort_keys=False, default_flow_style=None)
    print("".join(f"  {line}\n" for line in snippet.splitlines()), end="")
    return EX_OK
