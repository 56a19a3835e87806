"""The command line's list of ticket statuses is the domain's, written out for a fast start."""

from mailgate.cli.main import STATUSES
from mailgate.domain import Status


def test_the_status_choices_are_the_domains() -> None:
    assert tuple(s.value for s in Status) == STATUSES
