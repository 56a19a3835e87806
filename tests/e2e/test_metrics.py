"""The metrics and health endpoint, scraped for real while real mail streams in over SMTP.

The counters are counted in three processes (the listener, the pipeline child and the outbox sender);
the test checks each moved by exactly what was sent, so a count lost between processes shows.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mailgate import __version__
from tests.conftest import (
    MakeConfig,
    Service,
    free_port,
    make_mail,
    smtp_deliver,
    sql_rows,
    start_service,
    wait_until,
)
from tests.e2e.test_observability import with_reject_rule
from tests.e2e.test_startup import assert_one_clear_line, left_running, serve_until_exit


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(f"{base}/metrics")
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def children(service: Service) -> list[int]:
    """serve's child processes (the pipeline, then the outbox sender), from /proc, oldest first."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"PPid:\t{service.proc.pid}\n" in status and b"spawn_main" in cmdline:  # not the resource tracker
            found.append(int(pid))
    return sorted(found)


def test_counters_move_by_what_was_sent_and_health_tells_a_dead_child(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = make_config(rules=with_reject_rule(), metrics={"listen": f"127.0.0.1:{port}"},
                         scheduler={"outbox_interval": "1s"})
    service = start_service(config, tmp_path / "serve.log")
    try:
        status, body = get(f"{base}/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok", "problems": []}, body
        before = scrape(base)
        for n in range(5):
            mail = make_mail(f"Case {n}", message_id=f"<m{n}@c.example>")
            assert smtp_deliver(service.host, service.port, mail)[0] == 250
        assert smtp_deliver(service.host, service.port, make_mail("Case 0", message_id="<m0@c.example>"))[0] == 250
        assert smtp_deliver(service.host, service.port, make_mail("lottery win", message_id="<l@c.example>"))[0] == 550

        def settled() -> dict[Any, float] | None:
            sent = sql_rows(config, "SELECT count(*) FROM outbox WHERE status = 'sent'")[0][0]
            total = sql_rows(config, "SELECT count(*) FROM outbox")[0][0]
            now = scrape(base)
            return now if total and sent == total and value(now, "mailgate_deliveries_total", result="sent") == sent \
                else None

        after = wait_until(settled, what="every queued mail sent and counted", log=service.output)
        moved = {key: after[key] - before.get(key, 0.0) for key in after}
        assert value(moved, "mailgate_mails_received_total", source="smtp", outcome="accepted") == 5
        assert value(moved, "mailgate_mails_received_total", source="smtp", outcome="duplicate") == 1
        assert value(moved, "mailgate_mails_received_total", source="smtp", outcome="rejected") == 1
        assert value(moved, "mailgate_ingest_seconds_count", source="smtp") == 7
        assert value(moved, "mailgate_commit_batch_size_sum") == 7  # counted in the pipeline child
        sent = sql_rows(config, "SELECT count(*) FROM outbox WHERE status = 'sent'")[0][0]
        assert sent >= 10 and value(after, "mailgate_outbox_mails", status="sent") == sent  # acks and alerts
        assert value(after, "mailgate_outbox_mails", status="pending") == 0
        assert value(after, "mailgate_process_up", process="pipeline") == 1
        assert value(after, "mailgate_process_up", process="sender") == 1
        [(name,)] = sql_rows(config, "SELECT name FROM daemon")  # the registry's name is the metrics' name
        assert value(after, "mailgate_daemon_info", daemon=name, host=socket.gethostname(), version=__version__) == 1

        def dead_child_reported() -> tuple[int, str] | None:
            # serve restarts a dead sender at its next wake-up (within a second): on a loaded machine the
            # health check may come after that, so the sender is killed again until one check sees it dead
            running = children(service)  # the pipeline, then the sender (spawned after it)
            if len(running) == 2:  # (one: the sender is dead now, not yet restarted)
                os.kill(running[1], signal.SIGKILL)
            got = get(f"{base}/healthz")
            return got if got[0] == 503 else None

        status, body = wait_until(dead_child_reported, what="503 from /healthz", log=service.output)
        assert "process(es) not running" in json.loads(body)["problems"][0]
    finally:
        service.stop()


def test_metrics_port_in_use_is_a_start_failure(make_config: MakeConfig) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = make_config(metrics={"listen": f"127.0.0.1:{port}"})
        result = serve_until_exit(config)
    assert result.returncode == 1
    assert_one_clear_line(result, f"cannot listen on 127.0.0.1:{port} (metrics)")
    assert left_running(config) == []
