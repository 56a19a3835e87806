"""``mailgate serve``: wiring (``service``), the Context every process builds and swaps (``context``),
the APScheduler ticks (``scheduler``), group commit (``writer``), the pipeline and outbox sender
processes, and what each process does with memory (``memory``).

May import everything but ``cli``; the child processes import ``context``, never the module that
starts them.
"""
