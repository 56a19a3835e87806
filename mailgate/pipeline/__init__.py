"""The stages one mail goes through, in one transaction: ``ingest`` calls them in order (read it
first), one module per stage with typed values between them.

May import ``outbound`` (rendering outbox rows), ``sla`` (due times), ``config``, ``rules``,
``storage`` and the vocabulary; never ``intake``, ``jobs``, ``daemon`` or ``cli``.
"""
