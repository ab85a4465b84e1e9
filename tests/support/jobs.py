"""Helpers for the job tests: recordings of digit clips, job calls over HTTP, and what a job must answer."""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import requests

from aviary.engine import longform
from aviary.engine.onnx import RuntimeOptions, load_onnx_engine
from aviary.types import TranscribeOptions
from tests.support.fixtures import MODELS, clip, golden
from tools.fixtures import speech

if TYPE_CHECKING:
    from pathlib import Path

    from aviary.engine.base import Engine
    from aviary.types import Audio, Transcript

CLIPS = ("en-digits-3.wav", "en-digits-6.wav", "en-digits-10.wav", "en-digits-seven.wav")
TEXT = {case["clip"]: case["text"] for case in golden("parakeet-digits")["cases"]}


@dataclass(frozen=True)
class Jobs:
    """A server's base URL and its data directory."""

    url: str
    data_dir: Path


def recording(tmp_path: Path, repeats: int, seed: int = 0) -> tuple[Path, str]:
    """Digit clips with pauses between them, as a WAV, and what is said in it."""
    rng = np.random.default_rng(seed)
    names = [CLIPS[i] for i in rng.integers(0, len(CLIPS), repeats)]
    parts = []
    for name in names:
        parts += [clip(name), np.zeros(int(1.5 * speech.SAMPLE_RATE), dtype=np.float32)]
    path = tmp_path / f"recording-{seed}-{repeats}.wav"
    speech.write_wav(path, np.concatenate(parts))
    return path, " ".join(TEXT[name] for name in names)


CHUNK_SECONDS = 10


@functools.cache
def engine() -> Engine:
    return load_onnx_engine(MODELS / "parakeet-digits", "digits", RuntimeOptions(device="cpu", intra_op_threads=1))


def chunked(path: Path) -> str:
    """What a job must answer for `path`: the engine on each planned chunk, joined as the sync path joins them."""
    audio, _ = speech.read_wav(path)

    def transcribe(piece: Audio) -> Future[Transcript]:
        future: Future[Transcript] = Future()
        future.set_result(engine().transcribe([piece], [TranscribeOptions()])[0])
        return future

    return longform.transcribe_stream([audio], transcribe, chunking=longform.Chunking(max_seconds=CHUNK_SECONDS)).text


def submit(api: Jobs, path: Path, **headers: str) -> dict[str, Any]:
    with path.open("rb") as file:
        response = requests.post(f"{api.url}/transcribe/async", files={"file": file}, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def status_of(api: Jobs, job_id: str) -> dict[str, Any]:
    return dict(requests.get(f"{api.url}/jobs/{job_id}/status", timeout=30).json())


def until(api: Jobs, job_id: str, states: set[str], seconds: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while (status := status_of(api, job_id))["status"] not in states:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status
