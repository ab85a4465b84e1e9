"""Hostile and broken media, each with the error code Aviary must answer it with."""

from __future__ import annotations

import io
import struct

import av
import numpy as np

from aviary.types import SAMPLE_RATE, Audio
from tests.support.media import ENCODINGS, encode

ENCODING = {e.name: e for e in ENCODINGS}


def hostile_files(audio: Audio) -> dict[str, tuple[bytes, str]]:
    """Name -> (file bytes, expected error code), built around the speech `audio` at 16 kHz."""
    wav = bytearray(encode(audio, SAMPLE_RATE, ENCODING["wav-s16"]))
    absurd = bytearray(wav)
    absurd[4:8] = absurd[40:44] = struct.pack("<I", 0xFFFFFFFF)
    absurd_fmt = bytearray(wav)
    absurd_fmt[16:20] = struct.pack("<I", 0x7FFFFFF0)
    channels = bytearray(wav)
    channels[22:24] = struct.pack("<H", 255)
    rate = bytearray(wav)
    rate[24:28] = struct.pack("<I", 10_000_000)
    mp3 = encode(audio, SAMPLE_RATE, ENCODING["mp3-44k-stereo"])
    flac = encode(audio, SAMPLE_RATE, ENCODING["flac-48k-5.1"])
    return {
        "random bytes": (np.random.default_rng(1).bytes(1 << 16), "unsupported_media"),
        "empty file": (b"", "empty_file"),
        "text renamed .wav": (b"this is a text file, not audio\n" * 200, "unsupported_media"),
        "png renamed .wav": (png(), "unsupported_media"),
        "wav header only": (bytes(wav[:44]), "invalid_audio"),
        "wav absurd chunk sizes": (bytes(absurd), "invalid_audio"),
        "wav absurd fmt chunk": (bytes(absurd_fmt), "invalid_audio"),
        "truncated mp3": (mp3[: len(mp3) * 2 // 5], "invalid_audio"),
        "truncated flac": (flac[: len(flac) * 2 // 5], "invalid_audio"),
        "video without audio": (silent_video(), "invalid_audio"),
        "zero samples": (no_frames(), "invalid_audio"),
        "255 channels": (bytes(channels), "unsupported_media"),
        "10 MHz": (bytes(rate), "unsupported_media"),
        "hls playlist": (
            b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
            "unsupported_media",
        ),
        "ffconcat": (b"ffconcat version 1.0\nfile '/etc/passwd'\n", "unsupported_media"),
    }


def png() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def silent_video() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def no_frames() -> bytes:
    """A FLAC with its stream header and not one audio frame."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=16_000)
        stream.layout = "mono"
        container.mux(stream.encode(None))
    return buffer.getvalue()
