"""The server as users start it (`aviary serve`, the seed's `uvicorn app:app`), in a real uvicorn process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.fixtures import MODELS

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
AVIARY = str(Path(sys.executable).with_name("aviary"))
UVICORN = str(Path(sys.executable).with_name("uvicorn"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, json.loads(response.read())


@contextmanager
def _server(command: list[str], port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    environment = {**os.environ, "AVIARY_THREADS": "1", "AVIARY_DEVICE": "cpu", **env}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(port, "/health")
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop (SIGTERM ends by the signal, unmeasured)
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def _until_settled(port: int) -> list[dict[str, Any]]:
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = _get(port, "/health")
        assert status == 200
        seen.append(body)
        if body["status"] != "loading":
            return seen
        time.sleep(0.1)
    raise AssertionError(seen[-1])


def test_aviary_serve_loads_the_default_model_and_reports_it() -> None:
    port = _free_port()
    model = str(MODELS / "parakeet-digits")
    with _server([AVIARY, "serve", "--port", str(port), "--model", model], port, {}) as process:
        seen = _until_settled(port)
        assert {b["status"] for b in seen[:-1]} <= {"loading"}
        assert all(b["model_loaded"] is False for b in seen[:-1])
        health = seen[-1]
        assert health["status"] == "healthy", health
        assert health["model_loaded"] is True
        assert health["model_name"] == model
        assert health["device"] == "cpu"
        assert health["loaded_models"] == [model]
        status, info = _get(port, "/")
        assert status == 200
        assert info["default_model"] == "parakeet"
        assert set(info["models"]) == {"parakeet", "canary"}
        assert info["models"]["parakeet"]["name"] == "parakeet-tdt-0.6b-v2"
        assert info["supported_languages"] == sorted(info["supported_languages"])
        assert "en" in info["supported_languages"]
        assert info["endpoints"]["health"] == "/health"
        assert _get(port, "/openapi.json")[1]["info"]["title"] == "Aviary"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert process.stderr is not None
        assert "Application shutdown complete." in process.stderr.read().decode()


def test_a_model_that_cannot_load_is_degraded_with_its_reason(tmp_path: Path) -> None:
    port = _free_port()
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    with _server([AVIARY, "serve", "--port", str(port), "--model", "canary-1b-flash"], port, env):
        health = _until_settled(port)[-1]
    assert health["status"] == "degraded"
    assert health["model_loaded"] is False
    assert health["model_name"] == "canary-1b-flash"
    assert health["reason"].startswith("[model_unavailable] The model 'canary-1b-flash' is not available")


def test_the_seeds_uvicorn_command_and_environment_still_work() -> None:
    port = _free_port()
    model = str(MODELS / "parakeet-tdt-tiny")
    command = [UVICORN, "app:app", "--host", "127.0.0.1", "--port", str(port)]
    with _server(command, port, {"MODEL_NAME": model}):
        health = _until_settled(port)[-1]
    assert (health["status"], health["model_name"]) == ("healthy", model)
