"""Where does mailgate's ingest time go? cProfile over ``ingest_batch`` on the bench corpus, in process.

    .venv/bin/python -m bench.profile_ingest --messages 2000 --seed 1 [--batch 64] [--top 30]

The Context is built the way tests/conftest.py's ``ctx`` fixture builds it
(``build_context(load_config(path))`` then ``ctx.db.upgrade()``) on a private
copy of the demo config. The corpus goes through ``ingest_batch`` in groups
of ``--batch`` (the serve writer's max batch), like a saturated ``serve``:

1. unprofiled: wall ms per message (the honest figure; cProfile inflates);
2. unprofiled, ``ingest()`` one commit per message, as ``mailgate ingest`` does;
3. the acknowledgments those mails queued, delivered by ``flush_outbox``
   to the Maildir as ``serve``'s scheduler does (one commit per ack);
   stages alone, without the database: ``parse``, ``content_hash``, and a
   compat32 header-only parse for comparison (DESIGN's "fast parse");
4. the same batches with a perf_counter around each stage (no profiler;
   an autoflush is charged to the stage whose query triggered it);
5. profiled (fresh database): cumulative time per message of the pipeline's
   named parts, own time by package, then the top functions by cumulative
   and by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email import message_from_bytes
from email import policy as email_policy
from email.header import decode_header
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mailgate.pipeline.ingest as ingest_module
from bench.common import demo_config, machine
from bench.corpus import Message, generate, summary
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context

# (label, path fragment of the file, function name): the parts worth naming, cumulative time each.
# Named parts inside and under the stages (label, path fragment of the file, function name); cumulative
# time each. The stages themselves are discovered (see ``stage_calls``) and listed first.
PARTS: list[tuple[str, str, str]] = [
    ("BytesParser.parsebytes (email)", "email/parser.py", "parsebytes"),
    ("header objects (email.headerregistry)", "email/headerregistry.py", "__call__"),
    ("bodies_and_attachments", "mailgate/mime.py", "bodies_and_attachments"),
    ("sanitize_html (nh3)", "mailgate/htmltext.py", "sanitize_html"),
    ("html_to_text", "mailgate/htmltext.py", "html_to_text"),
    ("split_new_text", "mailgate/pipeline/quotes.py", "split_new_text"),
    ("content_hash (all calls)", "mailgate/mime.py", "content_hash"),
    ("BlobStore.put (attachment files)", "mailgate/blobs.py", "put"),
    ("Templates.render (Jinja2)", "mailgate/templates.py", "render"),
    ("Store.add (Core INSERT of one row)", "mailgate/store.py", "add"),
    ("Store.add_rows (Core INSERT of several)", "mailgate/store.py", "add_rows"),
    ("Session.flush (ORM flushes)", "sqlalchemy/orm/session.py", "flush"),
    ("Session.execute (ORM statements)", "sqlalchemy/orm/session.py", "execute"),
    ("Session.get", "sqlalchemy/orm/session.py", "get"),
    ("Connection.execute (every statement via SQLAlchemy)", "sqlalchemy/engine/base.py", "execute"),
    ("sqlite3 Cursor.execute (all SQL, C level)", "~", "<method 'execute' of 'sqlite3.Cursor' objects>"),
    ("sqlite3 Cursor.executemany (C level)", "~", "<method 'executemany' of 'sqlite3.Cursor' objects>"),
    ("begin_nested (SAVEPOINT)", "sqlalchemy/orm/session.py", "begin_nested"),
    ("Connection.commit (COMMIT + fsync)", "sqlalchemy/engine/base.py", "commit"),
]


# The stages are whatever pipeline/ingest.py's ``_process`` calls (found from its source, so renames
# in mailgate need no change here), plus these two around them.
OUTER = ("process_one", "ingest_batch")
# Own time grouped by where the code lives: (label, path fragment); first match wins, the rest is "other".
PACKAGES: list[tuple[str, str]] = [
    ("SQLAlchemy (ORM + Core, Python)", "sqlalchemy"),
    ("sqlite3 (C: SQL execution, commit)", "sqlite3"),
    ("email package (stdlib parser, headers)", "/email/"),
    ("Jinja2 (templates)", "jinja2"),
    ("nh3 (HTML sanitising)", "nh3"),
    ("mailgate's own code", "/mailgate/"),
]


def stage_calls() -> list[tuple[Any, str]]:
    """(namespace, name) of every mailgate function ``_process`` calls directly: ``f(...)`` or ``module.f(...)``."""
    import ast
    import inspect

    namespace = vars(ingest_module)
    found: list[tuple[Any, str]] = []
    tree = ast.parse(inspect.getsource(ingest_module._process))
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        owner: Any
        if isinstance(func, ast.Name):
            owner, name = ingest_module, func.id
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner, name = namespace.get(func.value.id), func.attr
        else:
            continue
        target = getattr(owner, name, None)
        if inspect.isfunction(target) and target.__module__.startswith("mailgate") and (owner, name) not in found:
            found.append((owner, name))
    return found + [(ingest_module, name) for name in OUTER]


def instrument() -> tuple[dict[str, float], list[str], Callable[[], None]]:
    """Wrap each stage with a perf_counter accumulator (no profiler); returns (totals, order, undo)."""
    totals: dict[str, float] = {}
    undo: list[tuple[Any, str, Any]] = []
    order: list[str] = []
    for owner, attr in stage_calls():
        func = getattr(owner, attr)
        label = attr if owner is ingest_module else f"{owner.__name__.rsplit('.', 1)[-1]}.{attr}"

        def wrapper(*a: Any, _f: Any = func, _k: str = label, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                totals[_k] = totals.get(_k, 0.0) + time.perf_counter() - start

        setattr(owner, attr, wrapper)
        undo.append((owner, attr, func))
        order.append(label)

    def restore() -> None:
        for owner, attr, func in undo:
            setattr(owner, attr, func)

    return totals, order, restore


def stage_table(totals: dict[str, float], order: list[str], n: int) -> None:
    print(f"\n{'stage (unprofiled, own wall incl. SQL it triggers)':<58}{'ms/msg':>9}")
    for label in order:
        if label in totals and label not in OUTER:
            print(f"  {label:<56}{totals[label] * 1e3 / n:>9.3f}")
    stages = sum(v for k, v in totals.items() if k not in OUTER)
    for label in OUTER:
        if label in totals:
            print(f"  {label + ' (total)':<56}{totals[label] * 1e3 / n:>9.3f}")
    if "process_one" in totals:
        rest = totals["process_one"] - stages
        print(f"  {'process_one - stages (SAVEPOINT, final flush on RELEASE)':<56}{rest * 1e3 / n:>9.3f}")
    if "ingest_batch" in totals and "process_one" in totals:
        commit = totals["ingest_batch"] - totals["process_one"]
        print(f"  {'ingest_batch - process_one (BEGIN, COMMIT, fsync)':<56}{commit * 1e3 / n:>9.3f}")


def _package(path: str) -> str:
    return next((label for label, fragment in PACKAGES if fragment in path), "other Python (stdlib etc.)")


def package_table(stats: pstats.Stats, n: int) -> None:
    """Own time per package; C builtins (str.join, re, ...) are charged to the package that called them."""
    groups: dict[str, float] = {}
    for (path, _line, func), (_cc, _nc, tt, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if path == "~" and "sqlite3" in func:
            shares = {PACKAGES[1][0]: tt}
        elif path == "~" and "nh3" in func:
            shares = {PACKAGES[4][0]: tt}
        elif path == "~" and callers:
            shares = {}
            for (caller_path, _l, _f), caller_stats in callers.items():
                label = _package(caller_path)
                shares[label] = shares.get(label, 0.0) + caller_stats[2]
        else:
            shares = {_package(path): tt}
        for label, value in shares.items():
            groups[label] = groups.get(label, 0.0) + value
    total = sum(groups.values())
    print(f"\n{'own time by package (profiled; builtins to their caller)':<58}{'ms/msg':>9}{'share':>8}")
    for label, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{label:<58}{tt * 1e3 / n:>9.3f}{tt / total:>8.0%}")


def outbox_timing(ctx: Context) -> None:
    """The serve process also delivers the acknowledgments (scheduler thread, same GIL, same SQLite lock)."""
    from mailgate.daemon.context import build_transport
    from mailgate.daemon.scheduler import Jobs

    jobs = Jobs(lambda: ctx, lambda: build_transport(ctx.config))
    start, cpu = time.perf_counter(), time.process_time()
    result = jobs.flush_outbox()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    sent = max(1, result.sent)
    label = "outbox delivery to the Maildir (flush_outbox), per ack"
    print(f"{label:<58}{seconds * 1e3 / sent:>8.3f} ms/ack  (CPU {cpu * 1e3 / sent:.3f} ms/ack; "
          f"{result.sent} sent, {result.retried} retried, {result.failed} failed)")


def envelopes(messages: Sequence[Message]) -> list[tuple[bytes, Envelope]]:
    now = datetime.now(UTC)
    return [(m.raw, Envelope(m.mail_from, m.rcpt_tos, "smtp", now, "127.0.0.1")) for m in messages]


def fresh_context(folder: Path) -> Context:
    ctx = build_context(load_config(demo_config(folder)))
    ctx.db.upgrade()
    return ctx


OUTCOMES: Counter[str] = Counter()
REASONS: Counter[str] = Counter()


def _note(outcome: Any) -> None:
    status = getattr(outcome, "status", type(outcome).__name__)
    OUTCOMES[status] += 1
    if status != "accepted":
        REASONS[str(getattr(outcome, "reason", outcome))[:160]] += 1


def check_outcomes(n_expected: int) -> None:
    """Every corpus mail should be accepted; otherwise the tree under test is broken and the figures are not."""
    print(f"  outcomes: {dict(OUTCOMES)}")
    if OUTCOMES["accepted"] < n_expected:
        print(f"  WARNING: only {OUTCOMES['accepted']} of {n_expected} accepted; figures are NOT representative."
              f" Reasons: {REASONS.most_common(3)}")
    OUTCOMES.clear()
    REASONS.clear()


def run_batches(ctx: Context, items: list[tuple[bytes, Envelope]], batch: int) -> None:
    for i in range(0, len(items), batch):
        for outcome in ingest_module.ingest_batch(items[i : i + batch], ctx):
            _note(outcome)


def run_single(ctx: Context, items: list[tuple[bytes, Envelope]]) -> None:
    for raw, env in items:
        try:
            _note(ingest_module.ingest(raw, env, ctx))
        except Exception as exc:  # Rejected / TempFail: counted, the run goes on
            _note(exc)


def timed(label: str, n: int, func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    func()
    ms = (time.perf_counter() - start) * 1e3 / n
    print(f"{label:<58}{ms:>8.3f} ms/msg{1e3 / ms:>9.0f} msg/s")
    return ms


def fast_headers(raw: bytes) -> tuple[str, ...]:
    """compat32 parse + decode_header of the fields mailgate reads: DESIGN's reference for a fast parse."""
    msg = message_from_bytes(raw, policy=email_policy.compat32)
    out = []
    for name in ("message-id", "subject", "from", "to", "cc", "in-reply-to", "references", "date"):
        value = msg.get(name)
        if value is not None:
            out.append("".join(p.decode(c or "ascii", "replace") if isinstance(p, bytes) else p
                               for p, c in decode_header(str(value))))
    return tuple(out)


def stage_timings(messages: Sequence[Message]) -> None:
    from mailgate.mime import content_hash
    from mailgate.pipeline.parse import parse

    n = len(messages)
    timed("mailgate parse() alone (headers, bodies, nh3, quotes)", n, lambda: [parse(m.raw) for m in messages])
    timed("BytesParser(policy=default).parsebytes alone", n,
          lambda: [message_from_bytes(m.raw, policy=email_policy.default) for m in messages])
    timed("compat32 parse + decode_header of 8 fields", n, lambda: [fast_headers(m.raw) for m in messages])
    timed("content_hash() alone", n, lambda: [content_hash(m.raw) for m in messages])


def part_table(stats: pstats.Stats, n: int) -> None:
    rows: list[tuple[str, str, str]] = []
    calls = stage_calls()
    for owner, attr in calls[-2:][::-1] + calls[:-2]:  # ingest_batch, process_one, then the stages
        code = getattr(owner, attr).__code__
        indent = "" if attr == "ingest_batch" else "  " if attr == "process_one" else "    "
        label = attr if owner is ingest_module else f"{owner.__name__.rsplit('.', 1)[-1]}.{attr}"
        rows.append((indent + label, code.co_filename, code.co_name))
    rows += [("  under them: " + label, fragment, name) for label, fragment, name in PARTS]
    table: dict[int, float] = {}
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for i, (_label, fragment, name) in enumerate(rows):
            if func == name and (fragment == path if fragment.startswith("/") else fragment in path):
                table[i] = table.get(i, 0.0) + ct
    print(f"\n{'part (cumulative, profiled: about 2x the real time)':<62}{'ms/msg':>9}")
    for i, (label, _fragment, _name) in enumerate(rows):
        if i in table:
            print(f"{label:<62}{table[i] * 1e3 / n:>9.3f}")


def print_stats(stats: pstats.Stats, sort: str, top: int) -> None:
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(top)
    text = buf.getvalue()
    print(text[text.find("   ncalls") :].replace(str(Path(sys.prefix)), "<venv>"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=1, help="accepted for symmetry; the profile is one thread")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    logging.getLogger("mailgate").setLevel(logging.CRITICAL)  # failures are counted by check_outcomes instead
    messages = generate(args.messages, args.seed)
    print(machine())
    print(summary(messages))
    n = len(messages)
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-profile-"))
    try:
        contexts = [fresh_context(tmp / name) for name in ("batch", "single", "profiled")]
        print()
        totals, order, undo = instrument()
        try:
            timed(f"ingest_batch, batches of {args.batch}, unprofiled", n,
                  lambda: run_batches(contexts[0], envelopes(messages), args.batch))
        finally:
            undo()
        check_outcomes(n)
        timed("ingest() one commit per message, unprofiled", n, lambda: run_single(contexts[1], envelopes(messages)))
        check_outcomes(n)
        try:
            outbox_timing(contexts[0])
        except Exception as exc:  # the outbox API may move; the profile stays useful without it
            print(f"outbox timing skipped: {exc!r}")
        stage_timings(messages)
        stage_table(totals, order, n)
        profiler = cProfile.Profile()
        items = envelopes(messages)
        profiler.runcall(run_batches, contexts[2], items, args.batch)
        check_outcomes(n)
        stats = pstats.Stats(profiler)
        part_table(stats, n)
        package_table(stats, n)
        print(f"\ntop {args.top} by cumulative time (profiled, whole run of {n} messages):")
        print_stats(stats, "cumulative", args.top)
        print(f"top {args.top} by own time:")
        print_stats(stats, "tottime", args.top)
        for ctx in contexts:
            ctx.db.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
