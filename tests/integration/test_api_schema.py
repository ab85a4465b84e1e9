"""Property tests over the OpenAPI schema (schemathesis): whatever a client sends, never a 5xx."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from aviary.api import create_app
from aviary.config import Settings
from aviary.engine.registry import Registry
from aviary.testing import FakeEngine

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from aviary.engine.base import Engine
    from aviary.engine.registry import Source


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.schemas.BaseSchema]:
    model = tmp_path_factory.mktemp("model")
    config = Settings(model=str(model), upload_dir=model / "uploads", decoder_processes=1, decode_timeout=30)
    engine = FakeEngine(text=lambda audio: f"heard {len(audio)} samples")

    def load(source: Source, path: Path) -> Engine:
        del source, path
        return engine

    app = create_app(config, registry=Registry(config, loader=load))
    with TestClient(app):  # runs the lifespan: the service lives on app.state while the schema's cases run
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_request_gets_a_server_error(api_schema: schemathesis.schemas.BaseSchema) -> None:
    # Operation by operation with hypothesis directly: schemathesis's pytest plugin does not run on pytest 9.
    seen = []
    for result in api_schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid operation fails the test here
        seen.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case[Any]) -> None:
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)

        check()
    assert "POST /transcribe" in seen
    assert "POST /v1/audio/transcriptions" in seen
