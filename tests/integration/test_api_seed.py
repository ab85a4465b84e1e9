"""The original server's `POST /transcribe` against a real uvicorn process, as its clients call it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import jiwer
import numpy as np
import pytest
import requests

from tests.support.fixtures import AUDIO, golden
from tests.support.hostile import hostile_files
from tests.support.media import ENCODINGS, encode
from tests.support.server import get_json
from tools.fixtures import speech

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.integration.conftest import Api

MP3 = next(e for e in ENCODINGS if e.name == "mp3-44k-stereo")


def _fresh(seed: int) -> tuple[np.ndarray, str]:
    """Freshly spoken digits (a held-out voice) and their text."""
    spec = speech.random_spec(np.random.default_rng(seed), "en", heldout=True)
    return speech.synthesize(spec), spec.text


def _mp3(seed: int) -> tuple[bytes, str]:
    audio, text = _fresh(seed)
    return encode(audio, speech.SAMPLE_RATE, MP3), text


def _post(api: Api, data: dict[str, str], file: bytes | None, name: str = "audio.mp3") -> requests.Response:
    files = {"file": (name, file, "audio/mpeg")} if file is not None else None
    return requests.post(f"{api.url}/transcribe", data=data, files=files, timeout=60)


def _code(response: requests.Response) -> tuple[int, str]:
    body = response.json()
    assert body["detail"] == body["error"]["message"] or isinstance(body["detail"], list)
    return response.status_code, body["error"]["code"]


@pytest.fixture
def clean_uploads(api: Api) -> Iterator[None]:
    yield
    deadline = time.monotonic() + 10
    while any(api.upload_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(api.upload_dir.iterdir()), "an upload was left on disk"


@pytest.mark.usefixtures("clean_uploads")
def test_the_seed_readme_curl_example(api: Api, tmp_path: Path) -> None:
    data, text = _mp3(101)
    (tmp_path / "audio.mp3").write_bytes(data)
    done = subprocess.run(
        [
            "curl", "-sS", "-X", "POST", f"{api.url}/transcribe",
            "-H", "accept: application/json",
            "-H", "Content-Type: multipart/form-data",
            "-F", "file=@audio.mp3",
        ],
        cwd=tmp_path, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    body = json.loads(done.stdout)
    assert set(body) >= {"text", "segments", "filename", "timestamp", "model", "language"}
    assert (body["filename"], body["model"], body["language"]) == ("audio.mp3", "parakeet", None)
    assert jiwer.wer(text, body["text"]) <= 0.2
    assert body["segments"]
    assert all(s["text"] and 0 <= s["start"] <= s["end"] <= body["duration"] for s in body["segments"])
    assert " ".join(s["text"] for s in body["segments"]) == body["text"]


@pytest.mark.usefixtures("clean_uploads")
def test_the_seed_readme_python_example(api: Api, tmp_path: Path) -> None:
    references, hypotheses = [], []
    for seed in (102, 103, 104):
        data, text = _mp3(seed)
        (tmp_path / "audio.mp3").write_bytes(data)
        # The README's example, with only the URL and the file's place changed:
        with (tmp_path / "audio.mp3").open("rb") as f:
            files = {"file": f}
            response = requests.post(f"{api.url}/transcribe", files=files, timeout=60)
        assert response.status_code == 200
        references.append(text)
        hypotheses.append(response.json()["text"])
    assert jiwer.wer(references, hypotheses) < 0.1


@pytest.mark.usefixtures("clean_uploads")
def test_canary_checks_and_defaults_its_language(api: Api) -> None:
    cases = golden("canary-digits")["cases"]
    german = next(c for c in cases if c["clip"] == "canary-de-1.wav" and c["target_lang"] == "de" and c["pnc"])
    english = next(c for c in cases if c["clip"] == "canary-en-1.wav" and c["target_lang"] == "en" and c["pnc"])
    clip = (AUDIO / "canary-de-1.wav").read_bytes()
    body = _post(api, {"model": "canary", "language": "de"}, clip, "de.wav").json()
    assert (body["text"], body["language"], body["model"]) == (german["text"], "de", "canary")
    assert body["segments"][0]["text"] == german["text"]  # Canary has no word times: one segment, filled in
    for tag in ("DE", "de-DE", "de_AT"):  # a locale or capitals name the same language
        body = _post(api, {"model": "canary", "language": tag}, clip, "de.wav").json()
        assert (body["text"], body["language"]) == (german["text"], "de"), tag
    body = _post(api, {"model": "canary"}, (AUDIO / "canary-en-1.wav").read_bytes()).json()
    assert (body["text"], body["language"]) == (english["text"], "en")
    response = _post(api, {"model": "canary", "language": "xx"}, clip)
    assert _code(response) == (400, "unsupported_language")
    assert response.json()["error"]["param"] == "language"
    info = requests.get(f"{api.url}/", timeout=10).json()  # a local directory: its languages, once loaded
    assert info["models"]["canary"]["loaded"] is True
    assert {"de", "en", "es", "fr"} <= set(info["models"]["canary"]["languages"]) <= set(info["supported_languages"])


@pytest.mark.usefixtures("clean_uploads")
def test_parakeet_echoes_the_language_and_honours_the_flags(api: Api) -> None:
    clip = (AUDIO / "en-digits-6.wav").read_bytes()
    body = _post(api, {"language": "fr", "include_timestamps": "NO"}, clip).json()
    assert (body["language"], body["segments"]) == ("fr", [])
    assert body["words"] is None
    body = _post(api, {"include_timestamps": "", "include_words": "on"}, clip).json()
    assert body["segments"]
    words = body["words"]
    assert " ".join(w["word"] for w in words) == body["text"]
    assert all(0 <= w["start"] <= w["end"] <= body["duration"] and 0 <= w["confidence"] <= 1 for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    response = _post(api, {"include_timestamps": "maybe"}, clip)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "include_timestamps"]
    response = _post(api, {}, None)
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": None}
    ]


@pytest.mark.usefixtures("clean_uploads")
def test_checks_come_in_the_seeds_order(api: Api) -> None:
    text = b"not audio\n" * 100
    assert _code(_post(api, {"model": "whisper", "language": "xx"}, text)) == (400, "model_not_found")
    assert _code(_post(api, {"model": "canary", "language": "xx"}, text)) == (400, "unsupported_language")
    assert _code(_post(api, {"model": "canary", "language": "de"}, text)) == (400, "unsupported_media")


@pytest.mark.usefixtures("clean_uploads")
def test_hostile_files_get_their_codes_and_the_server_stays_healthy(api: Api) -> None:
    audio, _ = _fresh(105)
    for name, (data, code) in hostile_files(audio).items():
        response = _post(api, {}, data, "upload.wav")
        assert _code(response) == (400, code), name
        assert str(api.upload_dir) not in response.text
        response = requests.post(
            f"{api.url}/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("upload.wav", data)},
            timeout=60,
        )
        assert _code(response) == (400, code), name
    assert get_json(api.port, "/health")[1]["status"] == "healthy"


def _raw(api: Api, head: bytes, body: bytes = b"", *, close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(head + body)
        if close:
            return b""
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < _length(reply):
            received = sock.recv(65536)
            if not received:
                break
            reply += received
        return reply


def _length(reply: bytes) -> int:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _head(api: Api, length: int | None, boundary: str = "b0undary") -> bytes:
    lines = [
        "POST /transcribe HTTP/1.1",
        f"Host: 127.0.0.1:{api.port}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.usefixtures("clean_uploads")
def test_an_oversized_upload_is_refused_before_its_body_is_read(api: Api) -> None:
    reply = _raw(api, _head(api, 50 * 10**9))  # 50 GB declared, not one byte sent
    status, _, rest = reply.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "payload_too_large"


@pytest.mark.usefixtures("clean_uploads")
def test_an_oversized_stream_is_refused_once_it_passes_the_cap(api: Api) -> None:
    def body() -> Iterator[bytes]:  # chunked: no Content-Length to judge by
        yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(api.max_upload_bytes // 65536 + 2):
            yield bytes(65536)

    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    try:
        response = requests.post(f"{api.url}/transcribe", data=body(), headers=headers, timeout=60)
    except requests.ConnectionError:  # the server may close while the client still sends: refused either way
        return
    assert _code(response) == (413, "payload_too_large")


@pytest.mark.usefixtures("clean_uploads")
def test_an_abandoned_upload_leaves_nothing_behind(api: Api) -> None:
    part = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + bytes(1 << 20)
    _raw(api, _head(api, 3 << 20), part, close=True)  # promises 3 MB, sends 1 MB, hangs up
    assert get_json(api.port, "/health")[1]["status"] == "healthy"
    deadline = time.monotonic() + 10
    while "the client disconnected" not in api.running.log():
        assert time.monotonic() < deadline, api.running.log()[-2000:]
        time.sleep(0.05)
    assert "Traceback" not in api.running.log()


@pytest.mark.usefixtures("clean_uploads")
def test_many_clients_at_once_all_get_answers_and_health_stays_responsive(api: Api) -> None:
    data, text = _mp3(106)

    def one(_: int) -> dict[str, Any]:
        response = _post(api, {}, data)
        assert response.status_code == 200
        return dict(response.json())

    with ThreadPoolExecutor(12) as pool:
        results = pool.map(one, range(24))
        loads = [get_json(api.port, "/health")[1]["queue"] for _ in range(20)]
        texts = {r["text"] for r in results}
    assert len(texts) == 1
    assert jiwer.wer(text, texts.pop()) <= 0.2
    assert all(load["running"] <= load["workers"] == 2 for load in loads)
