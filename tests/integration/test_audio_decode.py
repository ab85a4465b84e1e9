"""`aviary.audio.decode`: files and file objects to 16 kHz mono, and the errors for what is not audio."""

from __future__ import annotations

import io
import wave
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest

from aviary.audio import decode
from aviary.errors import EmptyFileError, InvalidAudioError, NoAudioStreamError, UnsupportedMediaError
from tests.support.fixtures import AUDIO, clip

if TYPE_CHECKING:
    from pathlib import Path


def test_a_path_and_a_file_object_decode_alike() -> None:
    path = AUDIO / "en-digits-6.wav"
    from_path = decode(path)
    with path.open("rb") as file:
        from_file = decode(file)
    assert from_path.dtype == np.float32
    np.testing.assert_array_equal(from_path, from_file)
    np.testing.assert_array_equal(from_path, clip("en-digits-6.wav"))  # 16 kHz mono WAV: the samples as stored


def test_stereo_44k_is_averaged_and_resampled_like_nemo() -> None:
    decoded = decode(AUDIO / "en-digits-44k-stereo.wav")
    reference = clip("en-digits-44k-stereo.wav")  # channel mean, polyphase resampling
    assert abs(len(decoded) - len(reference)) <= 1
    n = min(len(decoded), len(reference))
    assert np.sqrt(np.mean(decoded[:n] ** 2)) == pytest.approx(np.sqrt(np.mean(reference[:n] ** 2)), rel=0.01)
    assert float(np.abs(decoded[:n] - reference[:n]).max()) < 0.01


def test_empty_input_is_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.touch()
    with pytest.raises(EmptyFileError) as error:
        decode(empty)
    assert error.value.code == "empty_file"
    with pytest.raises(EmptyFileError):
        decode(io.BytesIO(b""))


def test_text_is_unsupported_media() -> None:
    with pytest.raises(UnsupportedMediaError) as error:
        decode(io.BytesIO(b"hello, this is not audio\n" * 100))
    assert error.value.code == "unsupported_media"


def test_a_wav_without_samples_is_invalid_audio() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
    buffer.seek(0)
    with pytest.raises(InvalidAudioError) as error:  # FFmpeg refuses a WAV without data at open
        decode(buffer)
    assert error.value.code == "invalid_audio"


def test_a_video_without_audio_has_no_audio_stream() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.time_base = Fraction(1, 10)
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with pytest.raises(NoAudioStreamError) as error:
        decode(buffer)
    assert str(error.value) == "The file has no audio stream."
