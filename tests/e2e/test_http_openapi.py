"""The API does what its OpenAPI document says, checked by schemathesis against a real ``mailgate serve``.

Schemathesis reads ``/api/v1/openapi.json`` from the running daemon and sends requests made from it,
valid and invalid (JSON and multipart bodies, path and header values), with a key that may do
everything. Every answer must be one the document lists for that operation, with its media type,
headers and body schema (problem JSON for errors), and none may be a 5xx. The examples per operation
are bounded so the whole run stays well under a minute and a half.

Each operation's cases come from schemathesis' own strategies, run by hypothesis here: its lazy pytest
loader (``schemathesis.pytest.from_fixture``), which a daemon started by a fixture would need, fails on
this pytest (it reads ``Function._nodeid``, which pytest 9 no longer has).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import MakeConfig
from tests.e2e.test_http_api import KEN, Desk, created, make_key, start_desk

# a key that may do everything, as the agent Jane, with a rate no run reaches
EVERYTHING = make_key("everything", ["create", "read", "agent"], agent="jane@example.com", rate="100000/1m")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
EXAMPLES = 60  # per operation and kind of run: 480 requests, about 15 s


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Iterator[Desk]:
    yield from start_desk(make_config, tmp_path, keys=[EVERYTHING])


def _runs(schema: Any, number: str) -> Iterator[tuple[str, Any]]:
    """(what, strategy) for each operation: valid and invalid requests, and valid ones for a ticket that
    exists (a random number is almost never one, and the 200 and 201 answers are what is checked then)."""
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:
            yield f"{operation.label} {mode.value}", operation.as_strategy(generation_mode=mode)
        if "{number}" in operation.path:
            yield f"{operation.label} on {number}", operation.as_strategy(path_parameters={"number": number})


def test_the_api_answers_as_its_document_says(desk: Desk) -> None:
    number = created(desk.open(EVERYTHING, requester=f"Ken <{KEN}>"))
    base = str(desk.http.base_url).rstrip("/")
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    schema.config.update(base_url=base, headers=EVERYTHING.auth)
    runs = list(_runs(schema, number))
    assert len(runs) == 3 * 2 + 2, [what for what, _ in runs]  # three operations, all of them tried
    failures = []
    for what, strategy in runs:
        @given(case=strategy)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all that failed are said together
            failures.append(f"--- {what}:\n{exc}")
    assert not failures, "\n".join(failures)
    assert "Traceback" not in desk.svc.output(), desk.svc.output()
