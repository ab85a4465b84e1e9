"""Property tests over the OpenAPI schema (schemathesis) against the real server: never a 5xx."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

if TYPE_CHECKING:
    from tests.integration.conftest import Api


# schemathesis 4.32 draws from `random` inside its strategies, which this hypothesis deprecates.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_no_request_gets_a_server_error(api: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    # Operation by operation with hypothesis directly: schemathesis's pytest plugin does not run on pytest 9.
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid operation fails the test here
        seen.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case[Any]) -> None:
            response = case.call(base_url=api.url, timeout=60)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)

        check()
    assert {"POST /transcribe", "POST /v1/audio/transcriptions", "POST /transcribe/async", "GET /jobs"} <= set(seen)
