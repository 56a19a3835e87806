"""Storage: the engine and transactions (``db``), the ORM (``model``), every query (``store``), the
prebuilt statements of the hot path (``fastsql``) and content-addressed attachments (``blobs``).

May import only the vocabulary (``mailgate.domain``, ``errors``, ...). ``store`` is the one place SQL
is written; ``Database.transaction()`` the only way to write.
"""
