"""The command line's lists of statuses, priorities and staff channels are the domain's, written out
for a fast start (parsing a command line must not import the domain model)."""

from mailgate.cli.main import PRIORITIES, STAFF_CHANNELS, STATUSES
from mailgate.domain import Priority, Status
from mailgate.pipeline import submission


def test_the_status_choices_are_the_domains() -> None:
    assert tuple(s.value for s in Status) == STATUSES


def test_the_priority_and_channel_choices_are_the_domains() -> None:
    assert tuple(p.value for p in Priority) == PRIORITIES
    assert submission.STAFF_CHANNELS == STAFF_CHANNELS
