"""SLA: a plan's targets and escalation ladder over business hours (``plans``), and a ticket's due
times and ladder timers, written by ``pipeline.apply`` in the ingest transaction (``timers``).

Firing the timers is scheduled work, above the pipeline: ``mailgate.jobs.sla_sweep``. May import
the vocabulary (``mailgate.hours``), ``config``, ``rules`` and ``storage``.
"""
