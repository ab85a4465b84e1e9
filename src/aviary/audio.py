"""Audio decoding: any file FFmpeg (through PyAV) can read -> float32 mono 16 kHz.

The first audio stream is decoded and resampled frame by frame with PyAV's resampler (FFmpeg's
swresample), so nothing but the output is ever held whole. Channels are averaged, as NeMo does:
swresample's own stereo-to-mono matrix mixes at -3 dB per channel, ~1.41x louder than the mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from aviary.errors import EmptyFileError, InvalidAudioError, NoAudioStreamError, NoSamplesError, UnsupportedMediaError
from aviary.types import SAMPLE_RATE, Audio

if TYPE_CHECKING:
    from collections.abc import Iterator


def decode(source: Path | BinaryIO) -> Audio:
    """Decode the first audio stream of `source` to float32 mono at 16 kHz.

    Raises:
        EmptyFileError: the input has no bytes.
        UnsupportedMediaError: FFmpeg does not recognise it as media, or it has no audio stream.
        InvalidAudioError: the audio is corrupt or holds no samples.
    """
    chunks = list(_decode_chunks(source))
    if not chunks:
        raise NoSamplesError
    return np.concatenate(chunks)


def _decode_chunks(source: Path | BinaryIO) -> Iterator[Audio]:
    import av
    import av.error

    if _is_empty(source):
        raise EmptyFileError
    try:
        container = av.open(str(source), mode="r") if isinstance(source, Path) else av.open(source, mode="r")
    except av.error.FFmpegError as exc:
        raise UnsupportedMediaError from exc
    with container:
        if not container.streams.audio:
            raise NoAudioStreamError
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=None, rate=SAMPLE_RATE)  # keep the channels
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().mean(axis=0, dtype=np.float32)
            for out in resampler.resample(None):
                yield out.to_ndarray().mean(axis=0, dtype=np.float32)
        except av.error.FFmpegError as exc:
            raise InvalidAudioError from exc


def _is_empty(source: Path | BinaryIO) -> bool:
    if isinstance(source, Path):
        try:
            return source.stat().st_size == 0
        except FileNotFoundError:
            return False  # av.open reports it
    position = source.tell()
    empty = not source.read(1)
    source.seek(position)
    return empty
