"""``mailgate init DIR``: a starter configuration that works where it is put, e.g. /etc/mailgate.

The demo in ``config/`` is made to run from a checkout (paths relative to it); copied elsewhere it
breaks. This writes mailgate.yaml with absolute paths (state dir, its database and outgoing folder),
the packaged templates (none named: the package's own are used), and copies of the demo's rules,
agents and SLA files to edit. The installation secret is created in the state dir, now if that
folder can be written, else by serve at its first start. It never overwrites a file unless told to.
"""

from __future__ import annotations

import os
from pathlib import Path

from mailgate.config.load import default_templates, packaged
from mailgate.errors import MailgateError
from mailgate.identity import load_secret

MAIN = """\
# mailgate configuration, written by `mailgate init`. `mailgate check-config -c {main}` checks it.
state_dir: {state}                 # database, attachments, installation secret (serve must write here)
# database: {{url: "postgresql+psycopg://mailgate@127.0.0.1/mailgate"}}   # default: SQLite in state_dir

intake:
  addresses: [{addresses}]         # recipients accepted; anything else gets 550
  smtp: {{listen: "{listen}", lmtp: false, max_message_size: 25MiB}}
  imap: []                         # IMAP mailboxes; see README

outbound:
  from: "Support <{first}>"
  transport: maildir               # smtp with a relay for real mail:
  maildir: {state}/outgoing        #   transport: smtp
  smtp: {{host: 127.0.0.1, port: 25, starttls: false}}

tickets: {{number_format: "######", subject_tag: "[#{{number}}]"}}
rules: rules.yaml                  # these three are next to this file
agents: agents.yaml
sla: sla.yaml
# templates: {folder}/templates    # default: the templates shipped with mailgate

logging: {{format: logfmt, level: info}}
# metrics: {{listen: "127.0.0.1:9425"}}   # Prometheus /metrics and /healthz
processes: true
"""


def write_starter(
    folder: Path, state_dir: Path, addresses: list[str], listen: str, *, force: bool = False
) -> list[str]:
    """The lines to print: each file written, and what to do next."""
    folder, state_dir = folder.resolve(), state_dir.resolve()
    default_templates()  # a broken install is said now, not at the first start
    demo = packaged("config", "rules.yaml")
    names = ("mailgate.yaml", "rules.yaml", "agents.yaml", "sla.yaml")
    present = [folder / n for n in names if (folder / n).exists()]
    if present and not force:
        raise MailgateError(f"{', '.join(map(str, present))} exist(s); nothing written (--force overwrites)")
    folder.mkdir(parents=True, exist_ok=True)
    main = MAIN.format(main=folder / "mailgate.yaml", state=state_dir, addresses=", ".join(addresses),
                       listen=listen, first=addresses[0], folder=folder)
    (folder / "mailgate.yaml").write_text(main)
    for name in names[1:]:
        (folder / name).write_text((demo / name).read_text())
    lines = [f"wrote {folder / n}" for n in names]
    existing = next(p for p in (state_dir, *state_dir.parents) if p.exists())
    if os.access(existing, os.W_OK):
        load_secret(state_dir / "secret")
        lines.append(f"installation secret in {state_dir / 'secret'}")
    else:
        lines.append(f"{state_dir} is not writable here: serve creates the installation secret at its first start")
    lines.append(f"next: edit {folder / 'agents.yaml'} and {folder / 'rules.yaml'}, "
                 f"then: mailgate check-config -c {folder / 'mailgate.yaml'}")
    return lines
