"""What serve counts for Prometheus, defined once and counted where things happen.

Counters live here, in the shared vocabulary, because they are counted in three processes (serve,
the pipeline child, the outbox sender) and in several layers. With ``metrics.listen`` set, serve
points prometheus_client's multiprocess mode at a folder of the state dir before any of them is
imported (see ``daemon/metrics_http.py``), so the children's counts reach the one scrape. Without it
they count in memory, which costs about a microsecond per mail and is never read.
What is a state, not an event (outbox depth, overdue tickets, IMAP health), is read at scrape time.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MAILS_RECEIVED = Counter(
    "mailgate_mails_received", "Received mails by source and outcome (once committed)", ["source", "outcome"]
)
INGEST_SECONDS = Histogram(
    "mailgate_ingest_seconds",
    "From a mail's last byte to its committed outcome",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
COMMIT_BATCH = Histogram(
    "mailgate_commit_batch_size", "Mails per group commit", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
DELIVERIES = Counter("mailgate_deliveries", "Delivery attempts by result (sent, retried, failed)", ["result"])
SLA_RUNGS = Counter("mailgate_sla_rungs_fired", "SLA escalation steps fired", ["target"])
RELOADS = Counter("mailgate_config_reloads", "Configuration reloads by result (applied, refused)", ["result"])
