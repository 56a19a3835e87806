"""mailgate against two peers that also turn mail into tickets: Roundup's mailgw and django-helpdesk.

Each peer lives in its own virtual environment under ``--peers-dir`` (made on first use, never in the
project's), at a pinned version. Every round, on the same generated corpus (``bench/corpus.py``):

1. **What each stores.** The whole corpus goes to each system on a fresh store: Roundup as one mbox
   through ``roundup-mailgw TRACKER mailbox FILE`` (classic template, SQLite, anonymous mail allowed,
   outgoing mail to a file); django-helpdesk as one file per mail in a queue's local directory, read by
   ``manage.py get_email`` (SQLite, mail to files); mailgate as one mbox through ``mailgate ingest
   --direct`` (the demo config). An exception on one mail ends a peer's whole run (Roundup leaves that
   mail first in the mbox, django-helpdesk first in the directory's order): it is set aside as
   "crashed" and the run repeated for the rest. A mail counts as stored when its Message-ID is in the
   system's store afterwards; the rest were refused (or crashed on).
2. **Speed on the mails all of them store.** Those mails again, each system on a fresh store: wall time
   and CPU (the child processes') of the command alone, set-up untimed. Ratios are mailgate/peer in
   mails per second of wall time, per round, and their median.

    .venv/bin/python -m bench.peers --messages 300 --rounds 3 --seed 1
"""

from __future__ import annotations

import argparse
import mailbox
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, demo_config, machine
from bench.corpus import Message, generate, write_mbox

ROUNDUP = "roundup==2.6.0"
HELPDESK = "django-helpdesk==2.6.1"
TIMEOUT = 1800


@dataclass
class Run:
    stored: set[str]
    wall: float
    cpu: float
    crashed: list[str]


def _key(message_id: str | None) -> str:
    return (message_id or "").strip().strip("<>").lower()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], **kw: object) -> tuple[subprocess.CompletedProcess[bytes], float, float]:
    cpu, wall = _children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, **kw)  # type: ignore[call-overload]
    return done, time.perf_counter() - wall, _children_cpu() - cpu


def _venv(root: Path, name: str, requirement: str) -> Path:
    """The peer's own virtual environment, made once."""
    venv = root / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists() or marker.read_text() != requirement:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True, timeout=TIMEOUT)
        marker.write_text(requirement)
    return venv


# --------------------------------------------------------------------------------------------- Roundup
def _roundup_tracker(venv: Path, home: Path) -> None:
    admin = str(venv / "bin" / "roundup-admin")
    subprocess.run([admin, "-i", str(home), "install", "classic", "sqlite"], check=True, capture_output=True)
    config = home / "config.ini"
    text = config.read_text()
    for old, new in (("#web = NO DEFAULT", "web = http://localhost:8080/tracker/"),
                     ("#domain = NO DEFAULT", "domain = example.com"),
                     ("#host = NO DEFAULT", "host = localhost")):
        text = text.replace(old, new, 1)
    # outgoing mail written to a file instead of sent (the option after the comment naming SENDMAILDEBUG)
    head, sep, tail = text.partition("# SENDMAILDEBUG.")
    text = head + sep + tail.replace("\ndebug = \n", f"\ndebug = {home / 'outgoing.txt'}\n", 1)
    config.write_text(text)
    schema = home / "schema.py"  # let mail from people it does not know yet open issues, as a help desk must
    schema.write_text(schema.read_text().replace("#db.security.addPermissionToRole('Anonymous', 'Email Access')",
                                                 "db.security.addPermissionToRole('Anonymous', 'Email Access')"))
    subprocess.run([admin, "-i", str(home), "initialise", "admin"], input=b"y\n", check=True, capture_output=True)


def roundup(venv: Path, work: Path, mails: list[Message]) -> Run:
    home = work / "tracker"
    work.mkdir(parents=True)
    _roundup_tracker(venv, home)
    mbox = work / "roundup.mbox"
    write_mbox(mails, mbox)
    wall = cpu = 0.0
    crashed: list[str] = []
    while True:
        done, w, c = _timed([str(venv / "bin" / "roundup-mailgw"), str(home), "mailbox", str(mbox)])
        wall, cpu = wall + w, cpu + c
        # it removes each mail from the mbox once handled; an exception ends the run and leaves the mail
        # it died on first in the file: set it aside and go on with the rest
        box = mailbox.mbox(mbox)
        keys = list(box.keys())
        if done.returncode == 0 or not keys:
            box.close()
            break
        crashed.append(str(box.get_message(keys[0])["Message-ID"]))
        box.lock()
        box.remove(keys[0])
        box.flush()
        box.unlock()
        box.close()
    with sqlite3.connect(home / "db" / "db") as db:
        stored = {_key(r[0]) for r in db.execute("SELECT _messageid FROM _msg")}
    return Run(stored, wall, cpu, crashed)


# ------------------------------------------------------------------------------------ django-helpdesk
_SETTINGS = """
import os
SECRET_KEY = "bench"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles", "django.contrib.sites",
    "django.contrib.humanize", "rest_framework", "helpdesk"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware", "django.contrib.messages.middleware.MessageMiddleware"]
SITE_ID = 1
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["HD_DB"]}}
ROOT_URLCONF = "urls"
HELPDESK_TEAMS_MODE_ENABLED = False
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = os.environ["HD_SENT"]
MEDIA_ROOT = os.environ["HD_MEDIA"]
USE_TZ = True
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
    "django.contrib.auth.context_processors.auth", "django.contrib.messages.context_processors.messages"]}}]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
STATIC_URL = "/static/"
"""
_URLS = ('from django.urls import include, path\n'
         'urlpatterns = [path("hd/", include("helpdesk.urls", namespace="helpdesk"))]\n')
_MANAGE = ("import os, sys\nsys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n"
           "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'settings')\n"
           "from django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n")


def helpdesk(venv: Path, work: Path, mails: list[Message]) -> Run:
    project, inbox = work / "project", work / "inbox"
    for folder in (project, inbox, work / "sent", work / "media", work / "crashed"):
        folder.mkdir(parents=True)
    (project / "settings.py").write_text(_SETTINGS)
    (project / "urls.py").write_text(_URLS)
    (project / "manage.py").write_text(_MANAGE)
    env = {**os.environ, "HD_DB": str(work / "db.sqlite3"), "HD_SENT": str(work / "sent"),
           "HD_MEDIA": str(work / "media")}
    python, manage = str(venv / "bin" / "python"), str(project / "manage.py")
    subprocess.run([python, manage, "migrate", "-v0"], env=env, check=True, capture_output=True)
    subprocess.run([python, manage, "shell", "-c",
                    "from helpdesk.models import Queue; Queue.objects.create(title='Support', slug='support', "
                    "email_address='support@example.com', allow_email_submission=True, email_box_type='local', "
                    f"email_box_local_dir='{inbox}/', email_box_interval=0)"], env=env, check=True, capture_output=True)
    for i, mail in enumerate(mails):
        (inbox / f"{i:06d}.eml").write_bytes(mail.raw)
    wall = cpu = 0.0
    crashed: list[str] = []
    while True:
        done, w, c = _timed([python, manage, "get_email"], env=env)
        wall, cpu = wall + w, cpu + c
        left = os.listdir(inbox)
        died = done.returncode != 0 or b"Queue processing failed" in done.stdout + done.stderr
        if not died or not left:
            break
        # it reads the directory in listdir order and deletes each mail it stored; an exception on one mail
        # ends the whole queue's run (logged, exit 0): the mail it died on is the first left, in that order
        crashed.append(left[0])
        shutil.move(str(inbox / left[0]), work / "crashed" / left[0])
    with sqlite3.connect(work / "db.sqlite3") as db:
        stored = {_key(r[0]) for r in db.execute("SELECT message_id FROM helpdesk_followup")}
    return Run(stored, wall, cpu, [mails[int(name.split(".")[0])].message_id for name in crashed])


# -------------------------------------------------------------------------------------------- mailgate
def mailgate(_venv: Path, work: Path, mails: list[Message]) -> Run:
    work.mkdir(parents=True)
    config = demo_config(work)
    subprocess.run([sys.executable, "-m", "mailgate", "db", "upgrade", "-c", str(config)], cwd=REPO, check=True,
                   capture_output=True)
    mbox = work / "mailgate.mbox"
    write_mbox(mails, mbox)
    done, wall, cpu = _timed([sys.executable, "-m", "mailgate", "ingest", "--direct", "-q", "-c", str(config),
                              str(mbox)], cwd=REPO)
    with sqlite3.connect(work / "state" / "mailgate.db") as db:
        stored = {_key(r[0]) for r in db.execute("SELECT message_id FROM inbound WHERE status = 'accepted'")}
    return Run(stored, wall, cpu, [] if done.returncode == 0 else [f"(ingest exited {done.returncode})"])


SYSTEMS: dict[str, Callable[[Path, Path, list[Message]], Run]] = {
    "mailgate": mailgate, "roundup": roundup, "django-helpdesk": helpdesk,
}


def _describe(mails: list[Message], keys: set[str]) -> str:
    chosen = [m for m in mails if _key(m.message_id) in keys]
    shapes: dict[str, int] = {}
    for m in chosen:
        label = f"{m.kind}/{m.shape}/{m.charset}"
        shapes[label] = shapes.get(label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in sorted(shapes.items(), key=lambda kv: -kv[1])[:6])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--peers-dir", type=Path, default=Path(tempfile.gettempdir()) / "mailgate-bench-peers")
    args = parser.parse_args()
    print(machine())
    args.peers_dir.mkdir(parents=True, exist_ok=True)
    venvs = {"mailgate": Path(sys.prefix), "roundup": _venv(args.peers_dir, "roundup", ROUNDUP),
             "django-helpdesk": _venv(args.peers_dir, "helpdesk", HELPDESK)}
    print(f"peers: {ROUNDUP}, {HELPDESK} (each in its own venv under {args.peers_dir})")
    mails = generate(args.messages, seed=args.seed)
    everyone = {_key(m.message_id) for m in mails}
    with tempfile.TemporaryDirectory() as tmp:
        found = {name: run(venvs[name], Path(tmp) / f"all-{name}", mails) for name, run in SYSTEMS.items()}
    print(f"\n1. the whole corpus ({len(mails)} mails) to each:")
    for name, run in found.items():
        missing = everyone - run.stored
        print(f"  {name:<16} stored {len(run.stored & everyone):>4}, refused or lost {len(missing):>4}"
              + (f", crashed on {len(run.crashed)}" if run.crashed else "")
              + (f"  ({_describe(mails, missing)})" if missing else ""))
    common = set.intersection(*(run.stored for run in found.values())) & everyone
    chosen = [m for m in mails if _key(m.message_id) in common]
    print(f"\n2. the {len(chosen)} mails all three store, each system on a fresh store, {args.rounds} rounds "
          "(mails/s of wall time; CPU ms per mail):")
    ratios: dict[str, list[float]] = {"roundup": [], "django-helpdesk": []}
    for round_no in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            runs = {name: run(venvs[name], Path(tmp) / name, chosen) for name, run in SYSTEMS.items()}
        rates = {name: len(chosen) / r.wall for name, r in runs.items()}
        for peer in ratios:
            ratios[peer].append(rates["mailgate"] / rates[peer])
        print(f"  round {round_no}: " + "; ".join(
            f"{name} {rates[name]:.0f}/s, {runs[name].cpu * 1000 / len(chosen):.1f} ms" for name in SYSTEMS)
            + " | mailgate/" + ", mailgate/".join(f"{p} {ratios[p][-1]:.1f}x" for p in ratios))
    print("\nmedian ratio: " + ", ".join(f"mailgate/{p} {statistics.median(r):.1f}x" for p, r in ratios.items()))


if __name__ == "__main__":
    main()
