"""Fixtures shared by the integration tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from aviary.audio import AudioLimits, IsolatedDecoder
from tests.support.fixtures import MODELS
from tests.support.server import AVIARY, free_port, server, until_settled

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.support.server import Running


@pytest.fixture(scope="module")
def decoder() -> Iterator[IsolatedDecoder]:
    """The product's decoder (child processes), with a generous timeout for slow CI machines."""
    isolated = IsolatedDecoder(AudioLimits(timeout_seconds=60.0), idle=1)
    yield isolated
    isolated.close()


@dataclass(frozen=True)
class Api:
    """A running `aviary serve`: parakeet-digits as the default model, canary-digits as `canary`."""

    port: int
    upload_dir: Path
    max_upload_bytes: int
    running: Running

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One real uvicorn process for the HTTP tests (the models load once)."""
    port = free_port()
    uploads = tmp_path_factory.mktemp("uploads")
    limit = 4_000_000
    env = {
        "AVIARY_ALIASES": json.dumps({"canary": str(MODELS / "canary-digits")}),
        "AVIARY_UPLOAD_DIR": str(uploads),
        "AVIARY_MAX_UPLOAD_BYTES": str(limit),
        "AVIARY_WORKERS": "2",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path_factory.mktemp("hf")),
    }
    command = [AVIARY, "serve", "--port", str(port), "--model", str(MODELS / "parakeet-digits")]
    with server(command, port, env) as running:
        assert until_settled(port)[-1]["status"] == "healthy"
        yield Api(port, uploads, limit, running)
