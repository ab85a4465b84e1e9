"""Audio input: any common audio or video file -> float32 mono 16 kHz, streamed, bounded and isolated.

- `IsolatedDecoder` (the server's and the CLI's way): decoding runs in child processes, so a crash or
  hang of FFmpeg on a hostile file costs one child; `stream()` hands over chunks as they are decoded.
- `decode()`: the same decoding in this process, for trusted input (tools, tests, benchmarks).
- `AudioLimits`: the caps (duration, input size, decoded samples, time), built from Settings.

What is accepted, and how length is bounded before work is spent: `aviary.audio.pyav`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from aviary.audio.isolation import IsolatedDecoder
from aviary.audio.pyav import DECODERS, DEMUXERS, AudioLimits, MediaInfo, decode_chunks, gather

if TYPE_CHECKING:
    from aviary.types import Audio

__all__ = ["DECODERS", "DEMUXERS", "AudioLimits", "IsolatedDecoder", "MediaInfo", "decode"]


def decode(source: Path | bytes | BinaryIO, limits: AudioLimits | None = None) -> Audio:
    """Decode `source` in this process to one float32 mono 16 kHz array.

    Raises:
        AudioError: its subclasses, for every reason an input is refused (see `pyav.decode_chunks`).
    """
    limits = limits or AudioLimits()
    if not isinstance(source, (Path, bytes)):
        source = source.read(limits.max_bytes + 1)
    return gather(decode_chunks(source, limits))
