"""Scheduled work over stored tickets: the SLA sweep (each due rung fired once), auto-close,
auto-resolve and reminders. Run by ``mailgate.daemon.scheduler``; they tell people through the
pipeline's notification code, so they sit above ``pipeline``.
"""
