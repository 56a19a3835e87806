"""Outgoing mail: sandboxed templates, composing a row into MIME (with Outlook's thread headers and
DKIM), the transport (SMTP relay or Maildir) and the outbox sender (claim, send, record, retry).

The pipeline only writes outbox rows (with rendered templates); the sender runs as scheduled work.
May import the vocabulary, ``config``, ``rules`` and ``storage``.
"""
