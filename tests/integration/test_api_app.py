"""The app in process with a fake engine: keys, CORS, load shedding, failures, and malformed bodies."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from huggingface_hub import constants as hub_constants
from pydantic import SecretStr

from aviary.api import create_app
from aviary.config import Settings
from aviary.engine.registry import KNOWN, Registry
from aviary.testing import FakeEngine
from aviary.types import SAMPLE_RATE, TranscribeOptions
from tests.support.fixtures import MODELS, clip
from tests.support.hub import add_onnx_model
from tests.support.media import ENCODINGS, cut_mp3, encode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    import httpx2
    import numpy.typing as npt

    from aviary.engine.base import Engine
    from aviary.engine.registry import Source

WAV = next(e for e in ENCODINGS if e.name == "wav-s16")
TONE = encode((0.1 * np.sin(np.arange(16_000) * 0.05)).astype(np.float32), 16_000, WAV)


def _client(tmp_path: Path, engine: FakeEngine, **settings: object) -> TestClient:
    values: dict[str, Any] = {
        "model": str(tmp_path),
        "upload_dir": tmp_path / "uploads",
        "data_dir": tmp_path / "data",
        "decoder_processes": 1,
        "warm_up": False,  # a warm-up call would count among the engine's calls
        **settings,
    }
    config = Settings(**values)

    def load(source: Source, path: Path) -> Engine:
        del source, path
        return engine

    return TestClient(create_app(config, registry=Registry(config, loader=load)), raise_server_exceptions=False)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path, FakeEngine(text=lambda _: "hello there world")) as client:
        yield client


def _post(client: TestClient, path: str = "/transcribe", **headers: str) -> httpx2.Response:
    data = {"model": "whisper-1"} if path.startswith("/v1/") else {}
    return client.post(path, files={"file": ("a.wav", TONE)}, data=data, headers=headers)


def test_api_keys_guard_everything_but_health_and_docs(tmp_path: Path) -> None:
    engine = FakeEngine()
    with _client(tmp_path, engine, api_keys="key-one, key-two") as client:
        for path in ("/health", "/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": "key-one"},
            {"Authorization": "Basic key-one"},
        ):
            response = _post(client, **headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert client.get("/v1/models", headers=headers).status_code == 401
        assert _post(client, Authorization="Bearer key-two").status_code == 200
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="key-one", http_client=client, max_retries=0)
        assert sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", TONE)).text == "hello world"
        wrong = openai.OpenAI(base_url="http://testserver/v1", api_key="key-three", http_client=client, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as error:
            wrong.models.list()
        assert error.value.code == "invalid_api_key"
    assert len(engine.calls) == 2


def test_offline_the_model_list_holds_what_is_on_this_machine(tmp_path: Path) -> None:
    add_onnx_model(tmp_path / "hub", KNOWN["parakeet-tdt-0.6b-v3"].onnx_repo, MODELS / "parakeet-digits")
    with _client(tmp_path, FakeEngine(), offline=True, cache_dir=tmp_path / "hub") as client:
        ids = {model["id"] for model in client.get("/v1/models").json()["data"]}
    assert {str(tmp_path), "parakeet", "parakeet-tdt-0.6b-v3", "whisper-1"} <= ids  # `parakeet`: the directory
    assert not {"parakeet-tdt-0.6b-v2", "canary-1b-v2", "canary"} & ids  # registry models not cached, and aliases
    if not hub_constants.HF_HUB_OFFLINE:  # online, every registry model can be fetched
        with _client(tmp_path, FakeEngine(), cache_dir=tmp_path / "hub") as client:
            assert {"parakeet-tdt-0.6b-v2", "canary"} <= {m["id"] for m in client.get("/v1/models").json()["data"]}


def test_cors_preflight_is_answered_without_a_key(tmp_path: Path) -> None:
    with _client(tmp_path, FakeEngine(), api_keys="k", cors_origins="https://app.example") as client:
        headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        response = client.options("/v1/audio/transcriptions", headers=headers)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        response = client.options("/v1/audio/transcriptions", headers={**headers, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers


def _until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_default_model_is_warmed_up_on_a_chunk_of_silence_before_it_is_healthy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[npt.NDArray[np.float32]] = []

    def hear(audio: npt.NDArray[np.float32]) -> str:
        heard.append(audio)
        return "hello"

    engine = FakeEngine(text=hear)
    settings = {"warm_up": True, "chunk_seconds": 7}
    with caplog.at_level(logging.INFO, logger="aviary"), _client(tmp_path, engine, **settings) as client:
        _until(lambda: client.get("/health").json()["status"] != "loading")
        assert client.get("/health").json()["status"] == "healthy"
        assert engine.calls == [(1, [TranscribeOptions()])]  # before any request
        assert heard[0].shape == (7 * SAMPLE_RATE,)
        assert not heard[0].any()
        assert _post(client).status_code == 200
    assert "Warmed up fake" in caplog.text

    failing = FakeEngine(fail=True)
    with caplog.at_level(logging.INFO, logger="aviary"), _client(tmp_path, failing, warm_up=True) as client:
        _until(lambda: client.get("/health").json()["status"] != "loading")
        assert client.get("/health").json()["status"] == "healthy"  # served all the same
    assert "Warming up fake failed: [inference_failed]" in caplog.text


def test_health_says_why_the_model_runs_on_the_cpu_when_cuda_was_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aviary.engine.onnx
    from aviary.engine.onnx import RuntimeOptions, load_onnx_engine

    # onnxruntime-gpu on a machine without a GPU: CUDA is listed, its sessions come up on the CPU.
    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(aviary.engine.onnx, "available_providers", lambda: listed)
    config = Settings(model=str(tmp_path), upload_dir=tmp_path / "uploads", data_dir=tmp_path / "data", warm_up=False)

    def load(source: Source, path: Path) -> Engine:
        del source, path
        return load_onnx_engine(MODELS / "parakeet-digits", "digits", RuntimeOptions(device="cuda", intra_op_threads=1))

    with TestClient(create_app(config, registry=Registry(config, loader=load))) as client:
        _until(lambda: client.get("/health").json()["status"] != "loading")
        health = client.get("/health").json()
    assert (health["status"], health["device"]) == ("healthy", "cpu")
    assert health["device_fallback"].startswith("CUDA failed to initialise")


def test_a_registry_model_is_checked_against_the_request_before_it_is_fetched(tmp_path: Path) -> None:
    def post(path: str, **data: str) -> tuple[int, str]:
        response = client.post(path, files={"file": ("a.wav", TONE)}, data=data)
        return response.status_code, response.json()["error"]["code"]

    with _client(tmp_path, FakeEngine(), offline=True, cache_dir=tmp_path / "hub") as client:
        for path in ("/transcribe", "/transcribe/async", "/v1/audio/transcriptions"):
            assert post(path, model="canary-1b-flash", language="pl") == (400, "unsupported_language"), path
        assert post("/v1/audio/translations", model="parakeet-tdt-0.6b-v3") == (400, "unsupported_task")
        assert post("/v1/audio/translations", model="canary-1b-flash") == (400, "invalid_option")  # no language
        # What the model can do is not refused before it is fetched: here it cannot be (offline).
        assert post("/transcribe", model="canary-1b-flash", language="de") == (503, "model_unavailable")
        assert post("/v1/audio/translations", model="canary-1b-flash", language="de") == (503, "model_unavailable")


def test_refusals_name_the_model_as_the_client_did_never_a_server_path(tmp_path: Path) -> None:
    model = str(MODELS / "canary-digits")
    config = Settings(model=model, upload_dir=tmp_path / "uploads", data_dir=tmp_path / "data", warm_up=False)
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        _until(lambda: client.get("/health").json()["status"] != "loading")
        seed = client.post("/transcribe", files={"file": ("a.wav", TONE)}, data={"model": "parakeet", "language": "xx"})
        data = {"model": "whisper-1", "language": "xx"}
        openai_route = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", TONE)}, data=data)
    for response, name in ((seed, "parakeet"), (openai_route, "whisper-1")):
        assert (response.status_code, response.json()["error"]["code"]) == (400, "unsupported_language")
        assert response.json()["error"]["message"].startswith(f"The model '{name}' does not support the language 'xx'")
        assert model not in response.text


def test_the_schema_names_the_key_and_database_statuses_of_every_route(tmp_path: Path) -> None:
    from aviary.api.auth import OPEN_PATHS

    schema = create_app(Settings(model=str(tmp_path), data_dir=tmp_path / "data")).openapi()
    routes = [(path, method, op["responses"]) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(routes) > 10
    for path, method, responses in routes:
        if path not in OPEN_PATHS:
            assert "invalid_api_key" in responses["401"]["description"], (method, path)
        if path.startswith("/jobs") or path == "/transcribe/async":
            assert "database_unavailable" in responses["503"]["description"], (method, path)


def test_ready_answers_503_until_the_default_model_serves_and_needs_no_key(tmp_path: Path) -> None:
    config = Settings(model=str(tmp_path), upload_dir=tmp_path / "uploads", data_dir=tmp_path / "data")
    loaded = threading.Event()

    def load(source: Source, path: Path) -> Engine:
        del source, path
        loaded.wait(60)
        return FakeEngine()

    config = config.model_copy(update={"api_keys": [SecretStr("k")]})
    with TestClient(create_app(config, registry=Registry(config, loader=load))) as client:
        loading = client.get("/ready")
        loaded.set()
        _until(lambda: client.get("/ready").status_code == 200)
        ready = client.get("/ready").json()
    assert (loading.status_code, loading.json()["status"], loading.json()["model_loaded"]) == (503, "loading", False)
    assert (ready["status"], ready["model_loaded"]) == ("healthy", True)


def test_a_default_model_whose_load_crashes_is_degraded_not_loading_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = Settings(model=str(tmp_path), upload_dir=tmp_path / "uploads", data_dir=tmp_path / "data")

    def crash(source: Source, path: Path) -> Engine:
        del source, path
        msg = "Data of TensorProto should be stored elsewhere"
        raise ValueError(msg)

    app = create_app(config, registry=Registry(config, loader=crash))
    with caplog.at_level(logging.WARNING, logger="aviary"), TestClient(app, raise_server_exceptions=False) as client:
        _until(lambda: client.get("/health").json()["status"] != "loading")
        health = client.get("/health").json()
        assert (health["status"], health["model_loaded"]) == ("degraded", False)
        assert health["reason"] == (
            f"[invalid_model] The model '{tmp_path}' cannot be loaded: "
            "ValueError: Data of TensorProto should be stored elsewhere."
        )
        response = _post(client)
        assert (response.status_code, response.json()["error"]["code"]) == (503, "invalid_model")
    assert "The default model is not served: [invalid_model]" in caplog.text
    assert "raise ValueError(msg)" in caplog.text  # with the loader's traceback, for the operator


def test_a_full_queue_answers_503_with_retry_after_and_health_stays_responsive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    engine = FakeEngine(text=lambda _: "slow" if release.wait(60) else "never")
    with _client(tmp_path, engine, workers=1, max_queue=1) as client:
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(_post(client).status_code)) for _ in range(2)]
        try:
            for thread in threads:
                thread.start()
            expected = {"running": 1, "waiting": 1, "workers": 1, "max_queue": 1}
            _until(lambda: client.get("/health").json()["queue"] == expected)  # answered while inference runs
            with caplog.at_level("INFO", logger="aviary.api"):
                busy = _post(client)
            assert busy.status_code == 503
            assert busy.json()["error"]["code"] == "server_busy"
            assert int(busy.headers["retry-after"]) >= 1
            refusals = [r for r in caplog.records if r.name == "aviary.api"]
            assert [(r.levelname, r.exc_info) for r in refusals] == [("INFO", None)]  # load, not a fault
            assert "POST /transcribe refused: [server_busy]" in refusals[0].getMessage()
        finally:
            release.set()
            for thread in threads:
                thread.join()
        assert results == [200, 200]
        assert client.get("/health").json()["queue"]["running"] == 0


def test_an_engine_failure_is_500_and_an_unexpected_one_hides_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _client(tmp_path, FakeEngine(fail=True)) as client:
        response = _post(client)
        assert (response.status_code, response.json()["error"]["code"]) == (500, "inference_failed")

    def explode(_: object) -> str:
        message = "secret internal detail /srv/models"
        raise RuntimeError(message)

    with _client(tmp_path, FakeEngine(text=explode)) as client, caplog.at_level(logging.ERROR, "aviary.api"):
        response = _post(client, "/v1/audio/transcriptions")
    body = response.json()
    assert (response.status_code, body["error"]["code"], body["error"]["type"]) == (
        500,
        "internal_error",
        "server_error",
    )
    request_id = response.headers["x-request-id"]
    assert request_id in body["detail"]
    assert "secret" not in response.text
    assert any(request_id in record.getMessage() and record.exc_info for record in caplog.records)


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (
            b"--xx\r\nContent-Type: text/plain\r\n\r\nhi\r\n--xx--\r\n",
            "multipart/form-data; boundary=xx",
            "invalid_request",
        ),
        (b"whatever", "multipart/form-data", "invalid_request"),
        (b"x" * 100, "application/octet-stream", "invalid_request"),
    ],
    ids=["part without a name", "no boundary", "not a form"],
)
def test_malformed_bodies_are_4xx(app: TestClient, body: bytes, content_type: str, code: str) -> None:
    response = app.post("/transcribe", content=body, headers={"Content-Type": content_type})
    assert response.status_code in {400, 422}
    assert response.json()["error"]["code"] == code


def test_text_fields_are_bounded(app: TestClient) -> None:
    many = {f"field{i}": "x" for i in range(100)}
    response = app.post("/transcribe", files={"file": ("a.wav", TONE)}, data=many)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_request")
    response = app.post("/transcribe", files={"file": ("a.wav", TONE)}, data={"language": "x" * 70_000})
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["param"]) == (400, "invalid_request", "language")
    assert error["message"] == "The field 'language' is too long: text fields may hold 65536 bytes in all."
    response = app.post("/transcribe", files={"file": ("a.wav", TONE)}, data={"language": "en\x00"})
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, "invalid_request")
    assert error["message"] == "The request body is malformed: the field 'language' holds a NUL character."
    assert app.post("/transcribe", content=b"", headers={"Content-Length": "nan"}).status_code == 400


def test_the_first_file_is_used_and_others_are_ignored(app: TestClient, tmp_path: Path) -> None:
    files = [("file", ("a.wav", TONE)), ("file", ("b.wav", b"junk")), ("other", ("c.bin", b"junk"))]
    response = app.post("/transcribe", files=files)
    assert (response.status_code, response.json()["filename"]) == (200, "a.wav")
    assert not any((tmp_path / "uploads").iterdir())


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        # .NET's MultipartFormDataContent for a name that is not ASCII: RFC 2047 beside RFC 5987
        ("name=file; filename=\"=?utf-8?B?5b2V6Z+zLndhdg==?=\"; filename*=utf-8''%E5%BD%95%E9%9F%B3.wav", "录音.wav"),
        ('name="file"; filename="=?utf-8?B?5b2V6Z+zLndhdg==?="', "录音.wav"),
        ("name=\"file\"; filename*=UTF-8''Gr%C3%B6%C3%9Fe.wav", "Größe.wav"),  # RFC 5987 alone
        ('name="file"; filename="Größe.wav"', "Größe.wav"),  # browsers: UTF-8 as it is
        ('name="file"', ""),  # no name at all (curl -F "file=<a.wav"): still the file
        ('name="file"; filename="nul\x00na\x01me.wav"', "nulname.wav"),  # control characters dropped
        ("name=\"file\"; filename*=UTF-8''a%00b%0A.wav", "ab.wav"),  # however they are encoded
    ],
    ids=["dotnet", "rfc2047", "rfc5987", "utf-8", "no filename", "control characters", "encoded controls"],
)
def test_the_file_and_its_name_as_clients_send_them(app: TestClient, disposition: str, filename: str) -> None:
    body = b"".join(
        [
            b"--xx\r\nContent-Disposition: form-data; " + disposition.encode() + b"\r\n",
            b"Content-Type: application/octet-stream\r\n\r\n" + TONE + b"\r\n--xx--\r\n",
        ]
    )
    response = app.post("/transcribe", content=body, headers={"Content-Type": "multipart/form-data; boundary=xx"})
    assert (response.status_code, response.json()["filename"], response.json()["text"]) == (
        200,
        filename,
        "hello there world",
    )


def test_openapi_documents_every_field_and_error(app: TestClient) -> None:
    schema = app.get("/openapi.json").json()
    seed = schema["paths"]["/transcribe"]["post"]
    fields = seed["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"file", "model", "language", "include_timestamps", "include_words"} <= set(fields)
    assert {"400", "401", "413", "422", "500", "503"} <= set(seed["responses"])
    components = schema["components"]["schemas"]
    assert components["SeedResult"]["examples"][0]["segments"]
    assert components["ErrorResponse"]["examples"][0]["error"]["code"] == "unsupported_media"
    fields = schema["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert {"file", "model", "response_format", "timestamp_granularities", "stream"} <= set(
        fields["schema"]["properties"]
    )
    paths = schema["paths"]
    for route in ("/v1/audio/transcriptions", "/v1/audio/translations"):  # OpenAI's statuses: 400 and 404, no 422
        assert {"400", "401", "404", "413", "503"} <= set(paths[route]["post"]["responses"]) - {"422"}, route
        assert "422" not in paths[route]["post"]["responses"], route
    assert {"401", "404"} <= set(paths["/v1/models/{model_id}"]["get"]["responses"])
    assert "413" not in paths["/v1/models/{model_id}"]["get"]["responses"]
    assert "409" in paths["/transcribe/async"]["post"]["responses"]
    assert {"400", "404", "500"} <= set(paths["/jobs/{job_id}/result"]["get"]["responses"])
    assert "413" not in paths["/jobs/{job_id}/status"]["get"]["responses"]


def test_a_job_whose_engine_crashes_is_failed_not_left_processing(tmp_path: Path) -> None:
    def explode(_: object) -> str:
        message = "a bug in the engine"
        raise RuntimeError(message)

    with _client(tmp_path, FakeEngine(text=explode)) as client:
        job_id = client.post("/transcribe/async", files={"file": ("a.wav", TONE)}).json()["job_id"]
        # Nobody asks for the job itself: the list shows it failed (as webhooks and the disk hear of it).
        _until(lambda: client.get("/jobs", params={"status": "failed"}).json()["total"] == 1)
        assert not any((tmp_path / "data" / "uploads").iterdir())
        status = client.get(f"/jobs/{job_id}/status").json()
        result = client.get(f"/jobs/{job_id}/result")
    assert status["error_code"] == "job_crashed"
    assert "a bug" not in status["error"]
    assert (result.status_code, result.json()["error"]["code"]) == (500, "job_crashed")
    assert not any((tmp_path / "data" / "uploads").iterdir())


def _told(record: logging.LogRecord) -> str:
    """A record's message and the error it carries."""
    return record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")


def test_cancelling_or_deleting_running_jobs_logs_no_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    long = encode(np.tile(clip("en-digits-10.wav"), 30), SAMPLE_RATE, WAV)  # speech in every chunk of 30 s
    dbos = logging.getLogger("dbos")  # DBOS's logger does not propagate to the root logger
    dbos.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO), _client(tmp_path, FakeEngine(delay=1.0)) as client:
        for ending in ("cancel", "delete"):
            job_id = client.post("/transcribe/async", files={"file": ("a.wav", long)}).json()["job_id"]
            _until(lambda: len(client.get("/jobs", params={"status": "processing"}).json()["jobs"]) == 1)
            time.sleep(1.5)  # inside one of its chunks
            if ending == "cancel":
                assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
            else:
                assert client.delete(f"/jobs/{job_id}").status_code == 204
            ended: str = job_id
            _until(lambda: any(ended in _told(r) for r in caplog.records if r.name == "dbos"))  # noqa: B023
    dbos.removeHandler(caplog.handler)
    assert not [_told(r) for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_job_the_engine_fails_logs_the_cause_once_and_its_result_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aviary"), _client(tmp_path, FakeEngine(fail=True)) as client:
        job_id = client.post("/transcribe/async", files={"file": ("a.wav", TONE)}).json()["job_id"]
        _until(lambda: client.get(f"/jobs/{job_id}/status").json()["status"] == "failed")
        assert client.get(f"/jobs/{job_id}/status").json()["error_code"] == "inference_failed"
        failed = [r for r in caplog.records if r.name == "aviary.jobs.workflows" and job_id in r.getMessage()]
        assert [(r.levelno, bool(r.exc_info)) for r in failed] == [(logging.ERROR, True)]  # with the cause
        caplog.clear()
        for _ in range(2):
            assert client.get(f"/jobs/{job_id}/result").status_code == 500
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # reporting it is not a new fault

        cut = cut_mp3(clip("en-digits-6.wav"), SAMPLE_RATE)  # its container checks out; decoding fails the job
        bad = client.post("/transcribe/async", files={"file": ("b.mp3", cut)}).json()["job_id"]
        _until(lambda: client.get(f"/jobs/{bad}/status").json()["status"] == "failed")
    refused = [r for r in caplog.records if r.name == "aviary.jobs.workflows" and bad in r.getMessage()]
    assert [(r.levelno, bool(r.exc_info)) for r in refused] == [(logging.INFO, False)]  # the client's input
