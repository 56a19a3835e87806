"""The ways mail comes in, each a thin adapter onto ``pipeline.ingest``: the SMTP/LMTP listener
(aiosmtpd), the pipe (files, stdin, mbox, Maildir) and IMAP (one thread per mailbox, its session's
commands, and a watchdog). A source hears "accepted" only after the commit.

May import ``pipeline`` and everything below it; never ``daemon`` or ``cli``.
"""
