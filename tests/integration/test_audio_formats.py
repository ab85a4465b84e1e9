"""Every accepted format round-trips through the isolated decoder: length kept, digits still understood."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import numpy as np
import pytest

from aviary.audio import AudioLimits, IsolatedDecoder
from aviary.engine.onnx import RuntimeOptions, load_onnx_engine
from aviary.types import SAMPLE_RATE, TranscribeOptions
from tests.support.fixtures import MODELS
from tests.support.media import ENCODINGS, Encoding, encode
from tools.fixtures import speech

if TYPE_CHECKING:
    from pathlib import Path

    from aviary.engine.base import Engine

TOLERANCE_SECONDS = 0.020


@pytest.fixture(scope="module")
def digits() -> Engine:
    return load_onnx_engine(MODELS / "parakeet-digits", "digits", RuntimeOptions(device="cpu", intra_op_threads=1))


@pytest.fixture(scope="module")
def utterance() -> tuple[speech.Spec, np.ndarray]:
    spec = speech.random_spec(np.random.default_rng(404), "en", heldout=True)
    return spec, speech.synthesize(spec)


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.name)
def test_round_trip(
    encoding: Encoding,
    decoder: IsolatedDecoder,
    digits: Engine,
    utterance: tuple[speech.Spec, np.ndarray],
    tmp_path: Path,
) -> None:
    spec, audio = utterance
    path = tmp_path / f"speech.{encoding.container}"  # the suffix is irrelevant: content decides
    path.write_bytes(encode(audio, SAMPLE_RATE, encoding))
    decoded = decoder.decode(path)
    assert decoded.dtype == np.float32
    assert decoded.ndim == 1
    assert abs(len(decoded) - len(audio)) / SAMPLE_RATE <= TOLERANCE_SECONDS + encoding.slack
    transcript = digits.transcribe([decoded], [TranscribeOptions()])[0]
    assert encoding.understood(transcript.text, spec.text), transcript.text


def test_bytes_paths_and_file_objects_decode_alike(decoder: IsolatedDecoder, tmp_path: Path) -> None:
    data = encode(
        speech.synthesize(speech.random_spec(np.random.default_rng(5), "en", heldout=True)), SAMPLE_RATE, ENCODINGS[6]
    )
    path = tmp_path / "clip"
    path.write_bytes(data)
    from_path = decoder.decode(path)
    with path.open("rb") as file:
        from_file = decoder.decode(file)
    np.testing.assert_array_equal(from_path, decoder.decode(data))
    np.testing.assert_array_equal(from_path, from_file)


def test_a_stream_hands_over_bounded_chunks(decoder: IsolatedDecoder) -> None:
    audio = np.concatenate(
        [speech.synthesize(speech.random_spec(np.random.default_rng(i), "en", heldout=True)) for i in range(8)]
    )
    data = encode(audio, SAMPLE_RATE, ENCODINGS[7])  # 48 kHz 5.1 FLAC
    small = IsolatedDecoder(AudioLimits(chunk_seconds=2.0), idle=0)
    try:
        chunks = list(small.stream(data))
    finally:
        small.close()
    assert len(chunks) >= len(audio) // (2 * SAMPLE_RATE)
    assert all(len(c) < 3 * SAMPLE_RATE for c in chunks)
    np.testing.assert_allclose(np.concatenate(chunks), decoder.decode(data), atol=1e-6)


def test_file_names_are_never_protocols(decoder: IsolatedDecoder, tmp_path: Path) -> None:
    audio = speech.synthesize(speech.random_spec(np.random.default_rng(9), "en", heldout=True))
    data = encode(audio, SAMPLE_RATE, ENCODINGS[1])
    for name in ("concat:a.wav|b.wav", "http:x.wav", "x:y.wav"):
        path = tmp_path / name
        path.write_bytes(data)
        assert len(decoder.decode(path)) == len(audio), name


@pytest.mark.parametrize("odd", [0, 1])
def test_gsm_wav_from_sox(decoder: IsolatedDecoder, digits: Engine, tmp_path: Path, odd: int) -> None:
    """GSM 06.10 in WAV, as telephony systems record it (PyAV has no GSM encoder: sox writes it).

    With an odd number of 65-byte blocks, RIFF pads the data chunk with a byte, which FFmpeg hands
    over as a last packet of one byte that its decoder refuses.
    """
    spec = speech.random_spec(np.random.default_rng(405), "en", heldout=True)
    audio = speech.synthesize(spec)
    blocks = len(audio) * 8_000 // SAMPLE_RATE // 320 // 2 * 2 + odd  # 320 samples at 8 kHz per block
    audio = np.pad(audio, (0, SAMPLE_RATE))[: blocks * 320 * SAMPLE_RATE // 8_000]
    source, gsm = tmp_path / "speech.wav", tmp_path / "call.wav"
    source.write_bytes(encode(audio, SAMPLE_RATE, ENCODINGS[1]))
    subprocess.run(["sox", str(source), "-r", "8000", "-e", "gsm-full-rate", str(gsm)], check=True)
    data = gsm.stat().st_size - 60  # the headers sox writes
    assert (data - odd) % 65 == 0  # whole blocks, and the padding byte after an odd number of them
    assert (data - odd) // 65 % 2 == odd
    decoded = decoder.decode(gsm)
    assert abs(len(decoded) - len(audio)) / SAMPLE_RATE <= TOLERANCE_SECONDS + 0.04  # 20 ms frames, 2 per block
    gsm_wav = Encoding("wav-gsm", "wav", "gsm_ms", rate=8_000, telephony=True)
    assert gsm_wav.understood(digits.transcribe([decoded], [TranscribeOptions()])[0].text, spec.text)
