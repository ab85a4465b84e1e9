"""Hostile and broken inputs: each refused with its stable code, quickly, in bounded memory, server unharmed."""

from __future__ import annotations

import io
import time
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest

from aviary.audio import AudioLimits, IsolatedDecoder
from aviary.audio.pyav import MediaInfo
from aviary.types import SAMPLE_RATE
from tests.support.hostile import hostile_files
from tests.support.media import ENCODINGS, encode
from tools.fixtures import speech

if TYPE_CHECKING:
    from pathlib import Path

ENCODING = {e.name: e for e in ENCODINGS}
ELEVEN_HOURS = 11 * 3600
HLS = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"


@pytest.fixture(scope="module")
def speech_audio() -> np.ndarray:
    return np.concatenate(
        [speech.synthesize(speech.random_spec(np.random.default_rng(i), "en", heldout=True)) for i in range(3)]
    )


def _flac_silence(seconds: int, rate: int = 8_000) -> bytes:
    """A FLAC of digital silence: 64k-sample frames of a few bytes each, so hours fit in tens of KB."""
    block = 65_535
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, options={"frame_size": str(block)})
        stream.layout, stream.format = "mono", "s16"
        zeros = np.zeros((1, block), dtype=np.int16)
        for index in range(-(-seconds * rate // block)):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, index * block, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _without_length(flac: bytes) -> bytes:
    """The same FLAC with STREAMINFO's total-sample count (and MD5) zeroed: 'unknown', as a stream writes it."""
    data = bytearray(flac)
    streaminfo = 8  # "fLaC" + the metadata block header
    data[streaminfo + 13] &= 0xF0
    data[streaminfo + 14 : streaminfo + 18] = bytes(4)
    data[streaminfo + 18 : streaminfo + 34] = bytes(16)
    return bytes(data)


def _refused(decoder: IsolatedDecoder, data: bytes, tmp_path: Path, suffix: str = ".wav") -> str:
    path = tmp_path / f"upload{suffix}"
    path.write_bytes(data)
    with pytest.raises(Exception) as error:  # noqa: PT011 - the code is what is asserted
        decoder.decode(path)
    message = str(error.value)
    assert str(tmp_path) not in message
    assert "Traceback" not in message
    return str(getattr(error.value, "code", type(error.value).__name__))


def test_garbage_is_refused_with_its_code(decoder: IsolatedDecoder, speech_audio: np.ndarray, tmp_path: Path) -> None:
    cases = hostile_files(speech_audio)
    codes = {name: _refused(decoder, data, tmp_path) for name, (data, _) in cases.items()}
    assert codes == {name: code for name, (_, code) in cases.items()}
    assert _refused(decoder, cases["hls playlist"][0], tmp_path, ".m3u8") == "unsupported_media"
    assert 0 < decoder.peak_mb < 512


def test_eleven_hours_over_the_cap_are_refused_within_seconds(decoder: IsolatedDecoder, tmp_path: Path) -> None:
    flac = _flac_silence(ELEVEN_HOURS)
    assert len(flac) < 4 << 20  # "a few MB"
    for data in (flac, _without_length(flac)):
        start = time.monotonic()
        assert _refused(decoder, data, tmp_path, ".flac") == "audio_too_long"
        assert time.monotonic() - start < 10
    assert 0 < decoder.peak_mb < 512


def test_the_headerless_silence_is_counted_not_decoded() -> None:
    from aviary.audio.pyav import decode_chunks
    from aviary.errors import AudioTooLongError

    flac = _without_length(_flac_silence(ELEVEN_HOURS))
    chunks = decode_chunks(flac, AudioLimits())
    with pytest.raises(AudioTooLongError):
        next(chunks)  # refused before the first chunk: the length was found by counting packets
    shorter = decode_chunks(_without_length(_flac_silence(60)), AudioLimits())
    info = next(shorter)
    assert isinstance(info, MediaInfo)
    assert info.declared_seconds is None
    written = -(-60 * 8_000 // 65_535) * 65_535  # whole blocks of 8 kHz samples
    assert sum(len(c) for c in shorter if not isinstance(c, MediaInfo)) == written * SAMPLE_RATE // 8_000


def test_decoding_stops_at_the_decoded_samples_cap(speech_audio: np.ndarray) -> None:
    # 8.5 s of 48 kHz 5.1 is ~2.4 M input samples: a cap of 1 M stops the decoder part-way, whatever
    # the header says.
    capped = IsolatedDecoder(AudioLimits(max_input_samples=1_000_000), idle=0)
    try:
        with pytest.raises(Exception) as error:  # noqa: PT011
            capped.decode(encode(speech_audio, SAMPLE_RATE, ENCODING["flac-48k-5.1"]))
    finally:
        capped.close()
    assert getattr(error.value, "code", None) == "audio_too_long"
    assert str(error.value) == (  # the cap it passed, not the length cap it did not
        "The audio holds more than 1000000 samples (all channels, at its own rate), "
        "the most this server decodes of one file."
    )


def test_inputs_over_the_size_cap_are_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.wav"
    path.write_bytes(bytes(4096))
    small = IsolatedDecoder(AudioLimits(max_bytes=1024), idle=0)
    try:
        for source in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
            with pytest.raises(Exception) as error:  # noqa: PT011
                small.decode(source)
            assert getattr(error.value, "code", None) == "payload_too_large"
    finally:
        small.close()
