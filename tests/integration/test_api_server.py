"""The server as users start it (`aviary serve`, the seed's `uvicorn app:app`), in a real uvicorn process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from typing import TYPE_CHECKING

import requests

from tests.support.fixtures import AUDIO, MODELS
from tests.support.server import AVIARY, UVICORN, docker_healthcheck, free_port, get_json, server, until_settled

if TYPE_CHECKING:
    from pathlib import Path


def test_aviary_serve_loads_the_default_model_and_reports_it() -> None:
    port = free_port()
    model = str(MODELS / "parakeet-digits")
    with server([AVIARY, "serve", "--port", str(port), "--model", model], port, {}) as running:
        seen = until_settled(port)
        assert {b["status"] for b in seen[:-1]} <= {"loading"}
        assert all(b["model_loaded"] is False for b in seen[:-1])
        health = seen[-1]
        assert health["status"] == "healthy", health
        assert health["model_loaded"] is True
        assert health["model_name"] == model
        assert health["device"] == "cpu"
        assert health["device_fallback"] is None  # CPU asked for (auto, no CUDA provider): nothing fell back
        assert health["loaded_models"] == [model]
        status, info = get_json(port, "/")
        assert status == 200
        assert info["default_model"] == "parakeet"
        assert set(info["models"]) == {"parakeet", "canary"}
        assert info["models"]["parakeet"]["name"] == model  # `parakeet` is the configured model, as in the seed
        assert info["models"]["canary"]["name"] == "canary-1b-v2"
        assert info["supported_languages"] == sorted(info["supported_languages"])
        assert "en" in info["supported_languages"]
        assert info["endpoints"]["health"] == "/health"
        assert get_json(port, "/openapi.json")[1]["info"]["title"] == "Aviary"
        for path in ("/health", "/ready", "/"):  # monitors and `wget --spider` ask with HEAD
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("HEAD", path)
            head = connection.getresponse()
            assert (head.status, head.getheader("content-type"), head.read()) == (200, "application/json", b"")
            connection.close()
        assert get_json(port, "/ready") == (200, health | {"queue": get_json(port, "/ready")[1]["queue"]})
        assert docker_healthcheck({"PORT": str(port)}) == 0  # the original server's variable
        assert docker_healthcheck({"AVIARY_PORT": str(port), "PORT": "1"}) == 0  # which the server's own overrides
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=30) == 0
        assert "Application shutdown complete." in running.log()


def test_a_model_that_cannot_load_is_degraded_with_its_reason(tmp_path: Path) -> None:
    port = free_port()
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    with server([AVIARY, "serve", "--port", str(port), "--model", "canary-1b-flash"], port, env):
        health = until_settled(port)[-1]
        assert docker_healthcheck({"AVIARY_PORT": str(port)}) == 1  # the image reports itself unhealthy
        assert get_json(port, "/ready")[0] == 503
    assert health["status"] == "degraded"
    assert health["model_loaded"] is False
    assert health["model_name"] == "canary-1b-flash"
    assert health["reason"].startswith("[model_unavailable] The model 'canary-1b-flash' is not available")


def test_behind_a_proxy_that_strips_a_path_prefix() -> None:
    port = free_port()
    model = str(MODELS / "parakeet-digits")
    env = {"AVIARY_ROOT_PATH": "asr/", "AVIARY_API_KEYS": "k", "AVIARY_WARM_UP": "false"}
    with server([AVIARY, "serve", "--port", str(port), "--model", model], port, env):
        assert until_settled(port)[-1]["status"] == "healthy"  # /health still needs no key
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=10) as docs:
            assert "'/asr/openapi.json'" in docs.read().decode()  # what the browser asks the proxy for
        assert get_json(port, "/openapi.json")[1]["servers"] == [{"url": "/asr"}]
        with (AUDIO / "en-digits-3.wav").open("rb") as file:
            url, headers = f"http://127.0.0.1:{port}/transcribe", {"Authorization": "Bearer k"}
            response = requests.post(url, files={"file": file}, headers=headers, timeout=60)
        openai_errors = []
        for fields in (
            {"model": "bogus"},
            {"model": "whisper-1", "temperature": "5"},
        ):  # OpenAI's codes, not the seed's
            with (AUDIO / "en-digits-3.wav").open("rb") as file:
                answer = requests.post(
                    f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                    files={"file": file},
                    data=fields,
                    headers=headers,
                    timeout=60,
                )
            openai_errors.append((answer.status_code, answer.json()["error"]["code"]))
    assert response.json()["text"] == "three one four"
    assert openai_errors == [(404, "model_not_found"), (400, "invalid_request")]


def test_the_seeds_uvicorn_command_and_environment_still_work() -> None:
    port = free_port()
    model = str(MODELS / "parakeet-tdt-tiny")
    command = [UVICORN, "app:app", "--host", "127.0.0.1", "--port", str(port)]
    with server(command, port, {"MODEL_NAME": model}):
        health = until_settled(port)[-1]
    assert (health["status"], health["model_name"]) == ("healthy", model)


def test_a_stalled_upload_is_refused_and_gives_its_place_back() -> None:
    """A client whose connection died without closing (no FIN) must not hold a place in the queue for ever."""
    port = free_port()
    model = str(MODELS / "parakeet-digits")
    env = {"AVIARY_UPLOAD_IDLE_SECONDS": "2", "AVIARY_WARM_UP": "false"}
    with server([AVIARY, "serve", "--port", str(port), "--model", model], port, env):
        until_settled(port)
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(
                b"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 100000\r\n\r\n" + head
            )
            started = time.monotonic()
            assert get_json(port, "/health")[1]["queue"]["waiting"] == 0  # an upload holds no place
            answer = http.client.HTTPResponse(client)
            answer.begin()
            waited = time.monotonic() - started
            body = json.loads(answer.read())
        assert answer.status == 408, body
        assert body["error"]["code"] == "upload_timeout"
        assert 1.5 < waited < 15
        queue = get_json(port, "/health")[1]["queue"]
        assert (queue["running"], queue["waiting"]) == (0, 0)


def test_slow_uploads_do_not_keep_other_requests_from_running() -> None:
    """Clients trickling their uploads (slow links, or a slowloris) hold no place in the queue."""
    port = free_port()
    model = str(MODELS / "parakeet-digits")
    env = {"AVIARY_WORKERS": "1", "AVIARY_MAX_QUEUE": "0", "AVIARY_WARM_UP": "false"}
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'
    with server([AVIARY, "serve", "--port", str(port), "--model", model], port, env):
        until_settled(port)
        slow = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
        try:
            for client in slow:
                client.sendall(
                    b"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    b"Content-Length: 100000\r\n\r\n" + head
                )
            time.sleep(0.5)
            queue = get_json(port, "/health")[1]["queue"]
            with (AUDIO / "en-digits-3.wav").open("rb") as file:
                response = requests.post(f"http://127.0.0.1:{port}/transcribe", files={"file": file}, timeout=60)
        finally:
            for client in slow:
                client.close()
    assert (queue["running"], queue["waiting"]) == (0, 0)
    assert (response.status_code, response.json()["text"]) == (200, "three one four")


def test_a_port_in_use_is_reported_before_anything_loads() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [AVIARY, "serve", "--port", str(port), "--model", str(MODELS / "parakeet-digits")]
        environment = {**os.environ, "AVIARY_THREADS": "1", "AVIARY_DEVICE": "cpu"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment, check=False)
    assert done.returncode == 3
    assert "Address already in use" in done.stderr
    assert "Warmed up" not in done.stderr
    assert "DBOS" not in done.stderr  # nor the job system started
